//! The multi-process check: a writer process stopped with SIGSTOP.

use super::{clock, suite_layout, Group, GroupBuilder, EVENT_DEADLINE, LARGE_WRITE};
use crate::error::OpError;
use crate::fabric::{Fabric, Memory, OpId};
use crate::log::layout::RING;
use crate::types::NodeId;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

/// What the writer process reports for each of its writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Permission,
    Other,
}

/// The body of the writer process of [`paused_writer_is_fenced`]: writes
/// [`LARGE_WRITE`] bytes into `target`'s ring in a loop, each write filled
/// with one byte value (1..=251, changing every write), and prints one line
/// per completion (`ok`, `permission` or the error) on stdout. Returns only
/// on an I/O error (the parent closed the pipe).
pub fn paused_writer_child<F: Fabric>(mut fabric: F, target: NodeId) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut completions = Vec::new();
    for round in 0u64.. {
        let byte = (round % 251 + 1) as u8;
        fabric
            .memory()
            .write(RING, &vec![byte; LARGE_WRITE as usize]);
        let op = OpId(round + 1);
        let line = match fabric.post_write(target, op, RING, RING, LARGE_WRITE) {
            Err(e) => format!("post failed: {e}"),
            Ok(()) => loop {
                completions.clear();
                fabric.poll(&mut completions);
                if let Some(c) = completions.iter().find(|c| c.op == op) {
                    break match c.result {
                        Ok(()) => "ok".to_string(),
                        Err(OpError::Permission) => "permission".to_string(),
                        Err(e) => format!("error: {e}"),
                    };
                }
                std::thread::yield_now();
            },
        };
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}

fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesised command name.
    stat.rsplit_once(") ")?.1.chars().next()
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -{sig} {} failed", child.id());
}

/// Kills the child process when dropped, so a failing check leaves nothing behind.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A writer in another process, stopped with SIGSTOP in the middle of its
/// writes and resumed after the owner granted its log to another node,
/// changes nothing; when the owner grants the log back, its writes land
/// again. Repeated for several rounds.
pub fn paused_writer_is_fenced<B: GroupBuilder>(builder: &mut B) {
    let layout = suite_layout(3);
    let (owner, writer, other) = (0u8, 1u8, 2u8);
    let Some((nodes, mut child)) =
        builder.build_with_writer_process(3, layout, NodeId(writer), NodeId(owner))
    else {
        return;
    };
    let stdout = child.stdout.take().expect("the writer's stdout is piped");
    let reaper = Reaper(child);
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("conformance-writer-output".into())
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let o = match line.as_str() {
                    "ok" => Outcome::Ok,
                    "permission" => Outcome::Permission,
                    "ready" => continue,
                    _ => Outcome::Other,
                };
                if tx.send(o).is_err() {
                    return;
                }
            }
        })
        .expect("start the output reader");
    let next = |what: &str| -> Outcome {
        rx.recv_timeout(EVENT_DEADLINE)
            .unwrap_or_else(|_| panic!("the writer process reported nothing while {what}"))
    };
    let mut g = Group::from_nodes(builder, nodes, layout);
    let pid = reaper.0.id();
    for round in 0..10u32 {
        g.grant(owner, writer);
        // Wait until the writer's writes land again.
        let mut oks = 0;
        while oks < 3 {
            if next("waiting for its writes to land") == Outcome::Ok {
                oks += 1;
            }
        }
        // Stop it at a varying point of its next 1 MiB write.
        let spin = clock();
        while spin.elapsed() < Duration::from_micros(37 * u64::from(round)) {
            std::hint::spin_loop();
        }
        signal(&reaper.0, "STOP");
        let start = clock();
        while process_state(pid) != Some('T') {
            assert!(start.elapsed() < EVENT_DEADLINE, "the writer did not stop");
            std::thread::yield_now();
        }
        g.grant(owner, other);
        let snapshot = g.log_snapshot(owner);
        // Outcomes reported before the stop belong to writes that ended
        // before the grant; drop them.
        while rx.try_recv().is_ok() {}
        signal(&reaper.0, "CONT");
        let mut refused = 0;
        while refused < 3 {
            // The write interrupted by the stop may have landed before the
            // grant; once one write is refused, every later one must be.
            match next("waiting for refusals after the grant") {
                Outcome::Ok => assert!(
                    refused == 0,
                    "round {round}: a write succeeded after an earlier one was refused"
                ),
                Outcome::Permission => refused += 1,
                Outcome::Other => {}
            }
        }
        assert!(
            g.log_snapshot(owner) == snapshot,
            "round {round}: the paused writer changed the log after the owner's grant returned"
        );
    }
    drop(reaper);
}
