//! `portcullis`: the rate-limit and lockout server, and its admin CLI.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: the request path allocates and frees a few dozen small
/// blocks per request on each worker thread; mimalloc's per-thread free
/// lists do that in fewer instructions than glibc's malloc (about 6 % of
/// the server's user-space instructions per proxied request under
/// callgrind, BENCHMARKS.md "The request path").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use portcullis_server::cli::{self, Target};
use portcullis_server::config::ServerConfig;

/// Rate limiting and brute-force lockout: a demo service with a login
/// endpoint, and the tools to inspect and lift bans.
#[derive(Parser)]
#[command(name = "portcullis", version, about, long_about = None, after_help = "\
CONFIG: TOML sections [server] [store] [requests] [login] [penalty] [slots] [lists] [[users]] [[jails]];
every key can be set as PORTCULLIS_<SECTION>__<KEY> (e.g. PORTCULLIS_REQUESTS__MAX_REQUESTS=5).
Durations are strings like \"60s\", \"15m\", \"24h\". A bad config exits with code 2 naming the key.
Logs: PORTCULLIS_LOG (or RUST_LOG), e.g. PORTCULLIS_LOG=debug.")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Remote {
    /// Server to ask (its admin API).
    #[arg(long, env = "PORTCULLIS_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Admin token (server.admin_token).
    #[arg(long, env = "PORTCULLIS_TOKEN")]
    token: Option<String>,
    /// Work on this SQLite store file instead of a server (only when no server runs on it).
    #[arg(long, conflicts_with = "url")]
    db: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server: GET /, POST /login, GET /metrics, /admin/... (default 127.0.0.1:8080, ./portcullis.db).
    Serve {
        /// TOML config file.
        #[arg(long, env = "PORTCULLIS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// List blocked, banned and locked addresses.
    Bans(Remote),
    /// Block (--for) or ban (until lifted) an address or a CIDR range by hand
    /// (IPv4 /8-/32, IPv6 /32-/128).
    Ban {
        /// The address or range, e.g. 203.0.113.9 or 203.0.113.0/24.
        ip: String,
        /// How long, e.g. 1h or 30m; without it the ban lasts until lifted.
        #[arg(long = "for", value_name = "DURATION")]
        for_: Option<String>,
        /// Why (listed with the ban).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Lift every block, ban and lock on an address, or a manual ban of exactly a range.
    Unban {
        /// The address or range.
        ip: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show table, store and decision counters.
    Status(Remote),
    /// Make a running server re-read its config file and environment (like SIGHUP).
    Reload(Remote),
    /// Read a password from stdin and print its argon2id PHC hash for [[users]]
    /// (parameters from [login] argon2_memory_kib, argon2_iterations, argon2_parallelism).
    HashPassword {
        /// TOML config file (for the argon2 parameters).
        #[arg(long, env = "PORTCULLIS_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn target(r: &Remote) -> Target<'_> {
    match &r.db {
        Some(p) => Target::Db(p),
        None => Target::Url {
            url: &r.url,
            token: r.token.as_deref(),
        },
    }
}

fn init_logs() {
    let filter = std::env::var("PORTCULLIS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` runs its requests on worker runtimes of its own (one per
    // core, see `portcullis_server::workers`); this one runs start-up,
    // background tasks and shutdown, so one thread is enough.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.cmd {
        Cmd::Serve { config } => serve(&rt, config),
        Cmd::HashPassword { config } => hash_password(config),
        Cmd::Bans(r) => report(rt.block_on(cli::bans(&target(&r))), r.json, cli::bans_table),
        Cmd::Status(r) => report(rt.block_on(cli::status(&target(&r))), r.json, cli::kv_table),
        Cmd::Reload(r) => report(rt.block_on(cli::reload(&target(&r))), r.json, cli::kv_table),
        Cmd::Ban {
            ip,
            for_,
            reason,
            remote,
        } => report(
            rt.block_on(cli::ban(
                &target(&remote),
                &cli::BanArgs { ip, for_, reason },
            )),
            remote.json,
            cli::kv_table,
        ),
        Cmd::Unban { ip, remote } => report(
            rt.block_on(cli::unban(&target(&remote), &ip, 64)),
            remote.json,
            cli::kv_table,
        ),
    }
}

/// `portcullis serve`.
fn serve(rt: &tokio::runtime::Runtime, config: Option<PathBuf>) -> ExitCode {
    let cfg = match ServerConfig::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    init_logs();
    match rt.block_on(portcullis_server::serve_from(cfg, config)) {
        Ok(()) => ExitCode::SUCCESS,
        // One line, once: the log would repeat it.
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `portcullis hash-password`.
fn hash_password(config: Option<PathBuf>) -> ExitCode {
    let cfg = match ServerConfig::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let params = match cfg.hashing.params() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("portcullis: argon2 parameters: {e}");
            return ExitCode::from(2);
        }
    };
    let mut pw = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut pw) {
        eprintln!("portcullis: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let pw = pw.strip_suffix('\n').unwrap_or(&pw);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    match portcullis_server::passwords::hash_password_with(pw, &params) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(
    r: Result<serde_json::Value, cli::CliError>,
    json: bool,
    table: fn(&serde_json::Value) -> String,
) -> ExitCode {
    match r {
        Ok(v) if json => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print!("{}", table(&v));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::FAILURE
        }
    }
}
