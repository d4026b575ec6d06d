//! `memcached-puts-gets <key_size> <value_size> <host> <port>`: the Mu artifact's
//! client of that name, the same as `mu-load memcached-puts-gets`.

use mu_examples::load::{alias_main, Backend, Mix, Workload};

fn main() -> std::process::ExitCode {
    alias_main(Workload {
        backend: Backend::Memcached,
        mix: Mix::PutsGets,
    })
}
