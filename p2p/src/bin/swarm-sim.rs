//! `swarm-sim`: simulates one blob spreading from the origins to a fleet of hosts, with the
//! real swarm engine on every host, and prints how long it took against the lower bound.
//!
//! ```text
//! swarm-sim --hosts 1000 --size 5GB --rate 5GB/s [--piece 4MiB] [--seed N] [--stream] [--json]
//! ```
//!
//! `--stream` gives every host a reader that takes the blob in order as it arrives (an agent
//! streaming a layer to its client), so the engines fetch the pieces just ahead of it first.
//!
//! With `--json` the last line of output is one JSON object (see `SimReport`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use shoal_core::units::{ByteRate, ByteSize};
use shoal_p2p::engine::Config;
use shoal_p2p::sim::{self, SimConfig};

#[derive(Debug, Parser)]
#[command(
    name = "swarm-sim",
    about = "Simulate a blob spreading through a swarm"
)]
struct Args {
    /// Downloading hosts.
    #[arg(long, default_value_t = 1000)]
    hosts: usize,
    /// Blob size (5GB, 512MiB, ...).
    #[arg(long, default_value = "5GB")]
    size: ByteSize,
    /// Upload and download capacity of every host (5GB/s, 10Gbit is 1.25GB/s).
    #[arg(long, default_value = "5GB/s")]
    rate: ByteRate,
    /// Upload capacity of each origin; defaults to --rate.
    #[arg(long)]
    origin_rate: Option<ByteRate>,
    /// Number of origins seeding the blob.
    #[arg(long, default_value_t = 1)]
    origins: usize,
    /// Piece length; defaults to what Shoal picks for the size.
    #[arg(long)]
    piece: Option<ByteSize>,
    /// One-way latency between hosts, in microseconds.
    #[arg(long, default_value_t = 250)]
    latency_us: u64,
    /// Fraction of hosts that are slow, and by how much.
    #[arg(long, default_value_t = 0.0)]
    slow_fraction: f64,
    #[arg(long, default_value_t = 10.0)]
    slow_factor: f64,
    /// Fraction of hosts that send corrupt pieces.
    #[arg(long, default_value_t = 0.0)]
    faulty_fraction: f64,
    /// Peers per tracker handout; 0: no tracker, hosts know only the origins.
    #[arg(long, default_value_t = 50)]
    handout: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this much simulated time, in seconds.
    #[arg(long, default_value_t = 3600.0)]
    time_limit: f64,
    /// Every host reads the blob in order as it arrives.
    #[arg(long)]
    stream: bool,
    /// Origins offer pieces in index order, each from its own share of the blob (origin k
    /// of r from piece k*n/r), rather than the first few and then the rest at random.
    #[arg(long)]
    ranked_offers: bool,
    /// End with one line of JSON.
    #[arg(long)]
    json: bool,
    /// Override an engine setting of the hosts, as `name=value` (durations in
    /// milliseconds); repeatable. `origin.name=value` sets it for the origins.
    #[arg(long = "engine", value_name = "NAME=VALUE")]
    engine: Vec<String>,
}

/// Applies one `name=value` override to an engine config.
fn set_knob(cfg: &mut Config, name: &str, value: &str) -> Result<(), String> {
    let n = || value.parse::<usize>().map_err(|e| format!("{name}: {e}"));
    let ms = || {
        value
            .parse::<f64>()
            .map(|v| Duration::from_secs_f64(v / 1000.0))
            .map_err(|e| format!("{name}: {e}"))
    };
    match name {
        "max_conns_per_blob" => cfg.max_conns_per_blob = n()?,
        "max_conns" => cfg.max_conns = n()?,
        "max_outbound_per_blob" => cfg.max_outbound_per_blob = n()?,
        "max_origin_conns_per_blob" => cfg.max_origin_conns_per_blob = n()?,
        "min_in_flight" => cfg.min_in_flight = n()?,
        "max_in_flight" => cfg.max_in_flight = n()?,
        "request_queue_time" => cfg.request_queue_time = ms()?,
        "stream_ahead" => cfg.stream_ahead = n()? as u64,
        "initial_window" => cfg.initial_window = n()?,
        "max_window" => cfg.max_window = n()?,
        "rate_window" => cfg.rate_window = ms()?,
        "max_upload_queue" => cfg.max_upload_queue = n()?,
        "max_uploads_per_conn" => cfg.max_uploads_per_conn = n()?,
        "request_timeout" => cfg.request_timeout = ms()?,
        "reject_backoff" => cfg.reject_backoff = ms()?,
        "endgame_copies" => cfg.endgame_copies = n()?.min(255) as u8,
        "tick" => cfg.tick = ms()?,
        "super_seed_offers" => cfg.super_seed_offers = n()?,
        _ => return Err(format!("unknown engine setting {name:?}")),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(rate) = args.rate.per_second() else {
        eprintln!("swarm-sim: --rate must be more than 0");
        return ExitCode::from(64);
    };
    if args.hosts == 0 || args.size.bytes() == 0 {
        eprintln!("swarm-sim: --hosts and --size must be more than 0");
        return ExitCode::from(64);
    }
    let mut cfg = SimConfig::new(args.hosts, args.size.bytes(), rate);
    if let Some(p) = args.piece {
        let Ok(p) = u32::try_from(p.bytes()) else {
            eprintln!("swarm-sim: --piece must be under 4GiB");
            return ExitCode::from(64);
        };
        if p == 0 {
            eprintln!("swarm-sim: --piece must be more than 0");
            return ExitCode::from(64);
        }
        cfg.piece_length = p;
    }
    cfg.origin_rate = args.origin_rate.and_then(|r| r.per_second());
    cfg.origins = args.origins.max(1);
    cfg.latency = Duration::from_micros(args.latency_us);
    cfg.slow_fraction = args.slow_fraction.clamp(0.0, 1.0);
    cfg.slow_factor = args.slow_factor.max(1.0);
    cfg.faulty_fraction = args.faulty_fraction.clamp(0.0, 1.0);
    cfg.handout = args.handout;
    cfg.seed = args.seed;
    cfg.time_limit = Duration::from_secs_f64(args.time_limit.max(0.0));
    cfg.streaming = args.stream;
    cfg.ranked_offers = args.ranked_offers;
    for knob in &args.engine {
        let Some((name, value)) = knob.split_once('=') else {
            eprintln!("swarm-sim: --engine wants name=value, not {knob:?}");
            return ExitCode::from(64);
        };
        let r = match name.strip_prefix("origin.") {
            Some(name) => set_knob(&mut cfg.origin_engine, name, value),
            None => set_knob(&mut cfg.engine, name, value),
        };
        if let Err(e) = r {
            eprintln!("swarm-sim: --engine {e}");
            return ExitCode::from(64);
        }
    }

    println!(
        "swarm-sim: {} hosts, {} blob in {}-byte pieces, {} per host, {} origin(s), seed {}{}",
        cfg.hosts,
        args.size,
        cfg.piece_length,
        args.rate,
        cfg.origins,
        cfg.seed,
        if cfg.streaming {
            ", every host reading in order"
        } else {
            ""
        }
    );
    let r = sim::run(&cfg);
    println!(
        "completed {}/{}  bound {:.3}s  central {:.1}s",
        r.completed, r.hosts, r.bound_s, r.central_s
    );
    println!(
        "p50 {:.3}s  p99 {:.3}s ({:.2}x bound)  max {:.3}s ({:.2}x bound)  fast-host p99 {:.3}s",
        r.p50_s, r.p99_s, r.p99_over_bound, r.max_s, r.max_over_bound, r.fast_p99_s
    );
    println!(
        "origin sent {:.2} copies, every piece once by {:.3}s; {} duplicate pieces, {} bad, {} time-outs, {} rejects; {} events in {:.1}s wall",
        r.origin_copies,
        r.origin_all_out_s,
        r.duplicate_pieces,
        r.bad_pieces,
        r.timeouts,
        r.rejects,
        r.events,
        r.wall_s
    );
    println!(
        "first piece (an in-order reader's first byte): p50 {:.3}s  p99 {:.3}s",
        r.first_piece_p50_s, r.first_piece_p99_s
    );
    let marks = |v: &[f64; 4]| {
        v.iter()
            .zip(r.progress_marks)
            .map(|(t, q)| format!("{:.0}% {t:.3}s", q * 100.0))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("held, p50 over hosts:     {}", marks(&r.held_p50_s));
    println!("in order, p50 over hosts: {}", marks(&r.in_order_p50_s));
    if args.json {
        match serde_json::to_string(&r) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("swarm-sim: cannot encode the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
