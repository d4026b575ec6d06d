//! Reading a live server's `COMMAND` reply into the table's shape, and
//! comparing it with the built-in table.

use crate::resp::Frame;

/// One command as a live server describes it, in the built-in table's
/// canonical text form (see [`CommandSpec::canonical`]).
///
/// [`CommandSpec::canonical`]: super::CommandSpec::canonical
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCommand {
    /// Lower-case name (`container|sub` for subcommands).
    pub name: String,
    /// Arity.
    pub arity: i64,
    /// Command flags.
    pub flags: Vec<String>,
    /// Key specs as `(flags, begin, find)` in canonical text.
    pub key_specs: Vec<(Vec<String>, String, String)>,
    /// True for container commands.
    pub has_subcommands: bool,
}

impl LiveCommand {
    /// The same canonical line as [`CommandSpec::canonical`] produces.
    ///
    /// [`CommandSpec::canonical`]: super::CommandSpec::canonical
    pub fn canonical(&self) -> String {
        let mut s = format!(
            "{} arity={} flags={}{}",
            self.name,
            self.arity,
            self.flags.join(","),
            if self.has_subcommands {
                " container"
            } else {
                ""
            }
        );
        for (flags, begin, find) in &self.key_specs {
            s.push_str(&format!(" key[{} {begin} {find}]", flags.join(",")));
        }
        s
    }
}

fn text(f: &Frame) -> Option<String> {
    match f {
        Frame::Simple(b) | Frame::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Frame::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

fn int(f: &Frame) -> Option<i64> {
    match f {
        Frame::Integer(i) => Some(*i),
        _ => None,
    }
}

fn list(f: &Frame) -> Option<&[Frame]> {
    match f {
        Frame::Array(items) | Frame::Set(items) => Some(items),
        _ => None,
    }
}

/// Looks `key` up in a RESP3 map or a RESP2 flat key/value array.
fn field<'a>(f: &'a Frame, key: &str) -> Option<&'a Frame> {
    match f {
        Frame::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some(key))
            .map(|(_, v)| v),
        Frame::Array(items) => items
            .chunks(2)
            .find(|kv| kv.len() == 2 && text(&kv[0]).as_deref() == Some(key))
            .map(|kv| &kv[1]),
        _ => None,
    }
}

fn begin(f: &Frame) -> Option<String> {
    let spec = field(f, "spec")?;
    Some(match text(field(f, "type")?)?.as_str() {
        "index" => format!("index({})", int(field(spec, "index")?)?),
        "keyword" => format!(
            "keyword({},{})",
            text(field(spec, "keyword")?)?,
            int(field(spec, "startfrom")?)?
        ),
        _ => "unknown".to_string(),
    })
}

fn find(f: &Frame) -> Option<String> {
    let spec = field(f, "spec")?;
    Some(match text(field(f, "type")?)?.as_str() {
        "range" => format!(
            "range({},{},{})",
            int(field(spec, "lastkey")?)?,
            int(field(spec, "keystep")?)?,
            int(field(spec, "limit")?)?
        ),
        "keynum" => format!(
            "keynum({},{},{})",
            int(field(spec, "keynumidx")?)?,
            int(field(spec, "firstkey")?)?,
            int(field(spec, "keystep")?)?
        ),
        _ => "unknown".to_string(),
    })
}

fn command(f: &Frame, out: &mut Vec<LiveCommand>) -> Option<()> {
    let items = list(f)?;
    let name = text(items.first()?)?.to_ascii_lowercase();
    let arity = int(items.get(1)?)?;
    let flags = list(items.get(2)?)?.iter().filter_map(text).collect();
    let mut key_specs = Vec::new();
    for ks in items.get(8).and_then(list).unwrap_or(&[]) {
        let kflags = field(ks, "flags")
            .and_then(list)
            .unwrap_or(&[])
            .iter()
            .filter_map(text)
            .collect();
        key_specs.push((
            kflags,
            begin(field(ks, "begin_search")?)?,
            find(field(ks, "find_keys")?)?,
        ));
    }
    let subs = items.get(9).and_then(list).unwrap_or(&[]);
    out.push(LiveCommand {
        name,
        arity,
        flags,
        key_specs,
        has_subcommands: !subs.is_empty(),
    });
    for sub in subs {
        command(sub, out)?;
    }
    Some(())
}

/// Parses the reply to `COMMAND` (or `COMMAND INFO`), RESP2 or RESP3,
/// including subcommands, sorted by name.
pub fn parse_command_reply(reply: &Frame) -> Result<Vec<LiveCommand>, String> {
    let mut out = Vec::new();
    for entry in list(reply).ok_or("COMMAND reply is not an array")? {
        if entry.is_null() {
            continue;
        }
        command(entry, &mut out)
            .ok_or_else(|| format!("unexpected COMMAND entry shape: {entry:?}"))?;
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Lines present on only one side: `+ live-only` and `- table-only`.
pub fn diff_against_table(live: &[LiveCommand]) -> Vec<String> {
    let ours: std::collections::BTreeSet<String> = super::REDIS_COMMANDS
        .iter()
        .map(|c| c.canonical())
        .collect();
    let theirs: std::collections::BTreeSet<String> =
        live.iter().map(LiveCommand::canonical).collect();
    let mut out: Vec<String> = theirs.difference(&ours).map(|l| format!("+ {l}")).collect();
    out.extend(ours.difference(&theirs).map(|l| format!("- {l}")));
    out
}
