//! `POLICY.md` (also the crate's `policy_table` docs) is rendered from the
//! policy code; this test fails when they disagree. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p mu-protocols --test policy_doc`.

const HEADER: &str = "# Redis replication policy\n\n\
Generated from `mu_protocols::rewrite::policy::policy` by `tests/policy_doc.rs`.\n\
Every Redis 7.0 command and subcommand, its class, and what the sidecar does with it.\n\
\"Served locally\" means the local backend answers and nothing is replicated;\n\
\"refused\" means the client gets an error naming the command and the reason, and\n\
nothing changes on any replica. PFCOUNT is replicated although Redis flags it\n\
readonly: it rewrites the key's cached cardinality. EVAL/EVALSHA/FCALL are replicated as-is instead of\n\
refused when the operator declares scripts deterministic.\n\n";

#[test]
fn policy_doc_is_current() {
    let want = format!("{HEADER}{}", mu_protocols::policy::render_markdown());
    let path = std::path::Path::new("POLICY.md");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap();
    assert!(
        have == want,
        "POLICY.md is stale; regenerate with UPDATE_GOLDEN=1"
    );
}
