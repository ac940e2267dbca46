//! `shoal-cluster`: the local cluster's commands, `up`, `status`, `demo` and `down`, which
//! `deploy/devcluster.sh` runs after building the binaries. Everything it does is in the
//! library; this is flags, messages and exit codes.
#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
