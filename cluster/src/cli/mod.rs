//! The command line: global options, the messages every command prints (`devcluster: …` on
//! stdout, `devcluster: error: …` on stderr), exit codes (1 for a failure, 2 for a usage
//! error, 130 when interrupted), and interrupts.
//!
//! - `local`: `up`, `status` and `down`.
//! - `demo`: `demo`.

mod demo;
mod local;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shoal_cluster::ClusterDir;

const USAGE: &str = "\
shoal-cluster: a whole Shoal cluster on this machine (deploy/devcluster.sh runs it)

  shoal-cluster [OPTIONS] up [--agents N] [--rate BYTES_PER_S] [--tls [--proxy-tls]]
                                                                  start it (default 3 agents)
  shoal-cluster [OPTIONS] status                                  what runs, where, its logs
  shoal-cluster [OPTIONS] demo [--agents N] [--rate BYTES_PER_S] [--size MIB] [--tls [--proxy-tls]]
                                                                  push an image, pull it on every agent
  shoal-cluster [OPTIONS] down [--wipe]                           stop it (--wipe: delete its data too)

--tls: the parts speak TLS to each other, every certificate from a CA made for the
cluster (its files in DIR/tls/, kept across ups); --proxy-tls: the proxy's registry is
HTTPS too. The agents' registries stay plain HTTP on loopback.

Options:
  --dir DIR          the cluster's directory (default $SHOAL_DEVCLUSTER_DIR, else ./.devcluster)
  --bin-dir DIR      where shoal-origin, shoal-tracker, shoal-proxy and shoal-agent are
                     (default $SHOAL_BIN_DIR, else this program's directory)
  --default-dir DIR  the directory of the usual cluster, named when ports are taken
  --as NAME          how users run this, for messages (default shoal-cluster)

deploy/devcluster.sh's header and the README list the ports, files and environment.
";

/// How a command ends.
#[derive(Debug)]
pub enum Exit {
    /// Printed as `devcluster: error: …`; exit 1.
    Fail(String),
    /// A failure already reported; exit 1.
    Said,
    /// Exit 130.
    Interrupted,
}

impl From<shoal_cluster::LaunchError> for Exit {
    fn from(e: shoal_cluster::LaunchError) -> Self {
        match e {
            shoal_cluster::LaunchError::Interrupted => Exit::Interrupted,
            e => Exit::Fail(e.to_string()),
        }
    }
}

pub type Outcome = Result<(), Exit>;

pub fn say(msg: impl std::fmt::Display) {
    println!("devcluster: {msg}");
}

pub fn fail<T>(msg: impl Into<String>) -> Result<T, Exit> {
    Err(Exit::Fail(msg.into()))
}

/// What every command knows.
pub struct Ctx {
    pub dir: ClusterDir,
    pub default_dir: Option<PathBuf>,
    pub bin_dir: Option<PathBuf>,
    /// How users run the commands (`./deploy/devcluster.sh`), for messages.
    pub me: String,
    pub runtime: tokio::runtime::Runtime,
    interrupt: std::sync::OnceLock<Interrupt>,
}

impl Ctx {
    /// From the first call on, SIGINT and SIGTERM no longer end the program but set the
    /// returned [`Interrupt`], so that what was started can be stopped first.
    pub fn interrupt(&self) -> Result<&Interrupt, Exit> {
        if let Some(i) = self.interrupt.get() {
            return Ok(i);
        }
        let i = Interrupt::install(&self.runtime)
            .map_err(|e| Exit::Fail(format!("cannot watch for interrupts: {e}")))?;
        Ok(self.interrupt.get_or_init(|| i))
    }
}

/// SIGINT or SIGTERM arrived: a flag for blocking code, a channel for async code.
#[derive(Clone)]
pub struct Interrupt {
    flag: Arc<AtomicBool>,
    rx: tokio::sync::watch::Receiver<bool>,
}

impl Interrupt {
    fn install(runtime: &tokio::runtime::Runtime) -> std::io::Result<Interrupt> {
        use tokio::signal::unix::{SignalKind, signal};
        let _guard = runtime.enter();
        // Registered now, so that no signal between here and the first wait is lost.
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let flag = Arc::new(AtomicBool::new(false));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let set = Arc::clone(&flag);
        runtime.spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            set.store(true, Ordering::Relaxed);
            let _ = tx.send(true);
        });
        Ok(Interrupt { flag, rx })
    }

    pub fn flag(&self) -> &AtomicBool {
        &self.flag
    }

    /// Waits until an interrupt arrives.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|set| *set).await;
    }
}

/// A whole number from the environment variable `name`, or `default`.
pub fn env_secs(name: &str, default: u64) -> Result<Duration, Exit> {
    match std::env::var(name) {
        Err(_) => Ok(Duration::from_secs(default)),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) => Ok(Duration::from_secs(n)),
            Err(_) => fail(format!(
                "{name} must be a whole number of seconds, not '{v}'"
            )),
        },
    }
}

fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        return p;
    }
    std::env::current_dir().map_or(p.clone(), |cwd| cwd.join(p))
}

pub fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut dir = std::env::var_os("SHOAL_DEVCLUSTER_DIR").map(PathBuf::from);
    let mut default_dir = None;
    let mut bin_dir = None;
    let mut me = "shoal-cluster".to_owned();
    while let Some(first) = args.first().cloned() {
        let slot = match first.as_str() {
            "--dir" => 0,
            "--default-dir" => 1,
            "--bin-dir" => 2,
            "--as" => 3,
            _ => break,
        };
        let Some(value) = args.get(1).cloned() else {
            eprintln!("shoal-cluster: {first} needs a value\n\n{USAGE}");
            return ExitCode::from(2);
        };
        match slot {
            0 => dir = Some(value.into()),
            1 => default_dir = Some(absolute(value.into())),
            2 => bin_dir = Some(absolute(value.into())),
            _ => me = value,
        }
        args.drain(..2);
    }
    let Some(command) = args.first().cloned() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    if matches!(command.as_str(), "-h" | "--help" | "help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("devcluster: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = absolute(dir.unwrap_or_else(|| PathBuf::from(".devcluster")));
    let ctx = Ctx {
        dir: ClusterDir::new(dir),
        default_dir,
        bin_dir,
        me,
        runtime,
        interrupt: std::sync::OnceLock::new(),
    };
    let outcome = match command.as_str() {
        "up" => local::up(&ctx, rest),
        "status" => local::status(&ctx, rest),
        "down" => local::down(&ctx, rest),
        "demo" => demo::demo(&ctx, rest),
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let code = match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit::Fail(msg)) => {
            eprintln!("devcluster: error: {msg}");
            ExitCode::FAILURE
        }
        Err(Exit::Said) => ExitCode::FAILURE,
        Err(Exit::Interrupted) => ExitCode::from(130),
    };
    // Nothing the runtime still runs (the interrupt watch) may hold the exit up.
    ctx.runtime.shutdown_background();
    code
}
