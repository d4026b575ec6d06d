//! A small datadriven runner: text files of cases, each
//!
//! ```text
//! # comment
//! <directive> [arg ...]
//! <input lines; escapes \r \n \t \\ \xHH; the file's own newlines are dropped>
//! ----
//! <expected output lines>
//! <blank line>
//! ```
//!
//! Set `UPDATE_GOLDEN=1` to rewrite the expected outputs from the actual
//! ones (then review the diff).

use std::fmt::Write as _;
use std::path::Path;

/// Interprets the escapes of an input line.
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'\\' => out.push(b'\\'),
                b's' => out.push(b' '),
                b'x' => {
                    let hex = std::str::from_utf8(&b[i + 2..i + 4]).expect("hex escape");
                    out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                    i += 4;
                    continue;
                }
                other => panic!("unknown escape \\{}", other as char),
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Renders bytes as a quoted string with escapes for non-printables.
pub fn quote(b: &[u8]) -> String {
    let mut s = String::from("\"");
    for &c in b {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            0x20..=0x7e => s.push(c as char),
            _ => write!(s, "\\x{c:02x}").unwrap(),
        }
    }
    s.push('"');
    s
}

/// One case of a file.
pub struct Case {
    /// Line number of the directive.
    pub line: usize,
    /// The directive's first word.
    pub directive: String,
    /// The directive's remaining words.
    pub args: Vec<String>,
    /// The unescaped input bytes.
    pub input: Vec<u8>,
    expected: String,
}

fn parse(text: &str) -> Vec<Case> {
    let lines: Vec<&str> = text.lines().collect();
    let mut cases = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim_end();
        if l.is_empty() || l.starts_with('#') {
            i += 1;
            continue;
        }
        let mut words = l.split_whitespace().map(String::from);
        let directive = words.next().unwrap();
        let args = words.collect();
        let line = i + 1;
        i += 1;
        let mut input = Vec::new();
        while i < lines.len() && lines[i] != "----" {
            input.extend(unescape(lines[i]));
            i += 1;
        }
        assert!(i < lines.len(), "case at line {line}: missing ----");
        i += 1;
        let mut expected = String::new();
        while i < lines.len() && !lines[i].is_empty() {
            expected.push_str(lines[i]);
            expected.push('\n');
            i += 1;
        }
        cases.push(Case {
            line,
            directive,
            args,
            input,
            expected,
        });
    }
    cases
}

/// Runs every case of `path` through `run`, comparing its output with the
/// expected text (or rewriting the file when `UPDATE_GOLDEN` is set).
pub fn run_file(path: &Path, mut run: impl FnMut(&Case) -> String) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cases = parse(&text);
    assert!(!cases.is_empty(), "{}: no cases", path.display());
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let mut rewritten = String::new();
    let mut src_lines = text.lines().peekable();
    let mut line_no = 0;
    for case in &cases {
        let mut actual = run(case);
        if !actual.ends_with('\n') {
            actual.push('\n');
        }
        if update {
            // Copy the file up to and including this case's `----`.
            loop {
                let l = src_lines.next().unwrap();
                line_no += 1;
                rewritten.push_str(l);
                rewritten.push('\n');
                if line_no > case.line && l == "----" {
                    break;
                }
            }
            while src_lines.peek().is_some_and(|l| !l.is_empty()) {
                src_lines.next();
                line_no += 1;
            }
            rewritten.push_str(&actual);
        } else if actual != case.expected {
            failures.push(format!(
                "{}:{}: {} \n--- expected\n{}--- actual\n{}",
                path.display(),
                case.line,
                case.directive,
                case.expected,
                actual
            ));
        }
    }
    if update {
        for l in src_lines {
            rewritten.push_str(l);
            rewritten.push('\n');
        }
        std::fs::write(path, rewritten).unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
