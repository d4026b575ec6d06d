//! Golden cases for every decoder (tests/testdata/*.txt). Every
//! case is also decoded at every split point and byte by byte, and must
//! give the same output.

mod support;

use std::path::Path;

use mu_protocols::memcached::{McReplyDecoder, McRequestDecoder};
use mu_protocols::resp::{FrameDecoder, RequestDecoder};
use mu_protocols::Limits;
use support::datadriven::{run_file, Case};
use support::render;

/// Limits from `key=value` directive arguments on top of the defaults.
fn limits(case: &Case) -> Limits {
    let mut l = Limits::default();
    for arg in &case.args {
        let (k, v) = arg.split_once('=').expect("limit argument is key=value");
        match k {
            "bulk" => l.bulk_len_max = v.parse().unwrap(),
            "array" => l.array_len_max = v.parse().unwrap(),
            "depth" => l.depth_max = v.parse().unwrap(),
            "line" => l.line_len_max = v.parse().unwrap(),
            _ => panic!("line {}: unknown limit {k}", case.line),
        }
    }
    l
}

fn run(case: &Case) -> String {
    let l = limits(case);
    match case.directive.as_str() {
        "reply" => render::split_invariant(
            || {
                let mut d = FrameDecoder::new(l);
                move |b: &mut bytes::BytesMut| d.decode(b)
            },
            &case.input,
            render::frame,
        ),
        "request" => render::split_invariant(
            || {
                let mut d = RequestDecoder::new(l);
                move |b: &mut bytes::BytesMut| d.decode(b)
            },
            &case.input,
            render::request,
        ),
        other => panic!("line {}: unknown directive {other}", case.line),
    }
}

#[test]
fn resp_reply_golden() {
    run_file(Path::new("tests/testdata/resp_reply.txt"), run);
}

#[test]
fn resp_request_golden() {
    run_file(Path::new("tests/testdata/resp_request.txt"), run);
}

fn run_memcached(case: &Case) -> String {
    let l = limits(case);
    match case.directive.as_str() {
        "mc-request" => render::split_invariant(
            || {
                let mut d = McRequestDecoder::new(l);
                move |b: &mut bytes::BytesMut| d.decode(b)
            },
            &case.input,
            |r| format!("{r:?}"),
        ),
        "mc-reply" => render::split_invariant(
            || {
                let mut d = McReplyDecoder::new(l);
                move |b: &mut bytes::BytesMut| d.decode(b)
            },
            &case.input,
            |r| format!("{r:?}"),
        ),
        other => panic!("line {}: unknown directive {other}", case.line),
    }
}

#[test]
fn memcached_request_golden() {
    run_file(
        Path::new("tests/testdata/memcached_request.txt"),
        run_memcached,
    );
}

#[test]
fn memcached_reply_golden() {
    run_file(
        Path::new("tests/testdata/memcached_reply.txt"),
        run_memcached,
    );
}
