//! # portcullis firmware example
//!
//! `portcullis-core` where it was made to live: on a Cortex-M3 with 64 KiB
//! of RAM and no allocator, guarding a TCP line service. Runs on QEMU's
//! `lm3s6965evb` (TI Stellaris LM3S6965): Embassy executor, `embassy-time`
//! on SysTick ([`time_driver`]), `embassy-net` over the Stellaris Ethernet
//! MAC ([`stellaris_eth`]), logs through `defmt` over semihosting.
//!
//! The service (port [`PORT`], one command per line, replies end in `\n`)
//! is described in [`proto`]. Every line is one request through the core's
//! `check_request` for the peer address; `LOGIN` reserves the attempt with
//! `begin_login` before the password is compared, then settles it with
//! `login_attempt_succeeded` or `login_attempt_failed` (penalty delay
//! served while holding one of the address's concurrency slots).
//!
//! Behind QEMU's user-mode network (SLIRP) every client appears as the
//! gateway 10.0.2.2, so all clients share one address's limits — which is
//! what the host test relies on.
#![no_std]
#![no_main]

mod board;
mod executor;
mod proto;
mod stack;
mod stellaris_eth;
mod time_driver;

use core::net::IpAddr;

use defmt_semihosting as _;
use embassy_executor::Spawner;
use embassy_net::tcp::TcpSocket;
use embassy_net::{
    IpAddress, Ipv4Address, Ipv4Cidr, Runner, Stack, StackResources, StaticConfigV4,
};
use embassy_time::{Duration, Instant, Timer};
use portcullis_core::Duration as CoreDuration;
use embedded_io_async::Write;
use portcullis_core::Shared;
use portcullis_core::{Config, ConfigError, FixedLimiter, Growth, NoSlot, Seed};
use static_cell::StaticCell;

use crate::executor::Executor;
use crate::proto::{LineBuf, Reply};
use crate::stellaris_eth::StellarisEth;

/// TCP port of the line service.
pub const PORT: u16 = 2323;
/// Concurrent connections (one task and one socket each).
const CONNECTIONS: usize = 4;
/// Socket buffers per connection, each direction.
const SOCKET_BUF: usize = 512;
/// Idle connections are closed after this long.
const IDLE: Duration = Duration::from_secs(30);
/// How often stale limiter entries are purged.
const PURGE_EVERY: Duration = Duration::from_secs(30);

/// Table capacity: 70 slots (62 live keys), 16 timestamps per key, within
/// the RAM the 32-slot (28-key) table took before issue 18 (compact logs,
/// one shared cold part per key).
pub type Limiter = FixedLimiter<70, 16>;

/// The limiter tables, in `.bss`; no heap anywhere. `FixedLimiter::new`
/// returns the ~16 KB table by value, so it passes through the stack once
/// at boot (the boot-time stack peak, see README "Size").
static TABLES: StaticCell<Result<Limiter, ConfigError>> = StaticCell::new();

/// The limiter as every connection task sees it: behind the core's
/// critical-section wrapper.
pub type SharedLimiter = Shared<&'static mut Limiter>;
static LIMITER: StaticCell<SharedLimiter> = StaticCell::new();

/// The firmware's rules: small numbers so the host test runs in seconds.
fn config() -> Config {
    let mut c = Config::default();
    c.requests.max_requests = 10;
    c.requests.window = CoreDuration::from_secs(5);
    c.blocks.block_for = CoreDuration::from_secs(30);
    c.blocks.violation_memory = CoreDuration::from_secs(600);
    c.blocks.max_block = CoreDuration::from_secs(300);
    c.blocks.ban_lookback = CoreDuration::from_secs(3600);
    c.login.max_failures = 8;
    c.login.ip_max_failures = Some(8);
    c.login.failure_window = CoreDuration::from_secs(60);
    c.login.lock_for = CoreDuration::from_secs(20);
    c.login.account_max_failures = Some(16);
    c.login.account_window = CoreDuration::from_secs(600);
    c.penalty.base = CoreDuration::from_millis(250);
    c.penalty.multiplier = Growth::times(2);
    c.penalty.max = CoreDuration::from_secs(4);
    c.slots.slots = 2;
    c.slots.slot_ttl = CoreDuration::from_secs(30);
    c.slots.when_full = NoSlot::Refuse;
    c
}

#[cortex_m_rt::entry]
fn main() -> ! {
    // Kept tiny: the big frames live in `init` and the executor, so the
    // stack high-water mark (see `stack`) measures the real peak.
    stack::paint();
    let (limiter, seed) = init();
    // Building the 16 KB table by value is the boot-time peak; repaint so
    // the purge log reports the steady-state peak separately.
    defmt::info!(
        "stack: boot peak {=usize} of {=usize} bytes",
        stack::high_water(),
        stack::size()
    );
    stack::paint();
    static EXECUTOR: StaticCell<Executor> = StaticCell::new();
    EXECUTOR
        .init(Executor::new())
        .run(move |spawner| spawn_all(spawner, limiter, seed));
}

/// Clocks, time driver, seed and limiter.
#[inline(never)]
fn init() -> (&'static SharedLimiter, [u8; 16]) {
    let Some(p) = cortex_m::Peripherals::take() else {
        defmt::panic!("peripherals taken twice");
    };
    board::init_clocks();
    time_driver::init(p.SYST);
    // Let SysTick run a little so its counter carries some boot jitter.
    cortex_m::asm::delay(10_000);
    let seed = board::seed(time_driver::counter_noise());

    // Build the limiter into its static cell.
    let tables = match TABLES.init_with(|| Limiter::new(config(), Seed::new(seed))) {
        Ok(l) => l,
        Err(e) => defmt::panic!("bad limiter config: {}", e),
    };
    let shared: &'static SharedLimiter = LIMITER.init(Shared::new(tables));
    defmt::info!(
        "limiter: FixedLimiter<32, 16>, {=usize} bytes, {=usize} keys max",
        core::mem::size_of::<Limiter>(),
        shared.with(|l| l.capacity()).unwrap_or(0)
    );
    (shared, seed)
}

fn spawn_all(spawner: Spawner, limiter: &'static SharedLimiter, seed: [u8; 16]) {
    let mac = board::factory_mac();
    let eth = StellarisEth::new(mac);
    defmt::info!("mac {=[u8]:02x}", mac);

    // QEMU user networking: guest 10.0.2.15/24, gateway (and every peer) 10.0.2.2.
    let net = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 15), 24),
        gateway: Some(Ipv4Address::new(10, 0, 2, 2)),
        dns_servers: Default::default(),
    });
    static RESOURCES: StaticCell<StackResources<{ CONNECTIONS + 2 }>> = StaticCell::new();
    let mut net_seed = [0u8; 8];
    net_seed.copy_from_slice(&seed[8..]);
    let (stack, runner) = embassy_net::new(
        eth,
        net,
        RESOURCES.init(StackResources::new()),
        u64::from_le_bytes(net_seed),
    );
    spawner.must_spawn(net_task(runner));
    spawner.must_spawn(purge_task(limiter));
    for id in 0..CONNECTIONS {
        spawner.must_spawn(conn_task(id, stack, limiter));
    }
    let c = config();
    defmt::info!(
        "rules: {=u32} requests / {=u64} ms; lock after {=u32} failures for {=u64} ms; penalty {=u64} ms x{=u32}/1000 up to {=u64} ms; {=u32} slots",
        c.requests.max_requests,
        c.requests.window.as_millis(),
        c.login.max_failures,
        c.login.lock_for.as_millis(),
        c.penalty.base.as_millis(),
        c.penalty.multiplier.thousandths(),
        c.penalty.max.as_millis(),
        c.slots.slots
    );
    defmt::info!("listening on 10.0.2.15:{=u16}", PORT);
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, StellarisEth>) -> ! {
    runner.run().await
}

/// Drop entries that can no longer affect a decision, so the fixed table
/// keeps room for new addresses.
#[embassy_executor::task]
async fn purge_task(limiter: &'static SharedLimiter) -> ! {
    loop {
        Timer::after(PURGE_EVERY).await;
        let now = Instant::now();
        if let Ok((removed, len, stats)) = limiter.with(|l| (l.purge(now.into()), l.len(), l.stats())) {
            defmt::info!(
                "purge: removed {=usize}, {=usize} live, {=u64} evictions, {=u64} table-full; eth {}; stack peak since boot {=usize} of {=usize} bytes",
                removed,
                len,
                stats.evictions,
                stats.table_full,
                stellaris_eth::counters(),
                stack::high_water(),
                stack::size()
            );
        }
    }
}

#[embassy_executor::task(pool_size = CONNECTIONS)]
async fn conn_task(id: usize, stack: Stack<'static>, limiter: &'static SharedLimiter) -> ! {
    let mut rx = [0u8; SOCKET_BUF];
    let mut tx = [0u8; SOCKET_BUF];
    loop {
        let mut socket = TcpSocket::new(stack, &mut rx, &mut tx);
        socket.set_timeout(Some(IDLE));
        defmt::debug!("[{=usize}] accepting", id);
        if let Err(e) = socket.accept(PORT).await {
            defmt::warn!("[{=usize}] accept: {}", id, e);
            continue;
        }
        let peer = match socket.remote_endpoint().map(|e| e.addr) {
            Some(IpAddress::Ipv4(a)) => IpAddr::V4(a),
            None => {
                socket.abort();
                continue;
            }
        };
        defmt::info!(
            "[{=usize}] connection from {}",
            id,
            defmt::Debug2Format(&peer)
        );
        serve(&mut socket, id, peer, limiter).await;
        socket.close();
        let _ = socket.flush().await;
        socket.abort();
        defmt::info!("[{=usize}] closed", id);
    }
}

async fn send(socket: &mut TcpSocket<'_>, reply: &Reply) -> bool {
    let mut out = heapless::String::<64>::new();
    reply.render(&mut out);
    socket.write_all(out.as_bytes()).await.is_ok() && socket.flush().await.is_ok()
}

/// One connection: refuse at once if the address is already denied, then
/// answer line by line until the peer closes, says QUIT or goes idle.
async fn serve(
    socket: &mut TcpSocket<'_>,
    id: usize,
    peer: IpAddr,
    limiter: &'static SharedLimiter,
) {
    // A denied address does not get to hold a socket: peek (counts
    // nothing) and hang up with the reason.
    let early = limiter.with(|l| l.peek_request(peer, Instant::now().into()));
    if let Ok(d @ portcullis_core::Decision::Deny { .. }) = early {
        let r = Reply::denied(&d);
        defmt::info!("[{=usize}] refused at accept: {}", id, d);
        send(socket, &r).await;
        return;
    }

    let mut chunk = [0u8; 64];
    let mut line = LineBuf::new();
    loop {
        let n = match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        for &b in &chunk[..n] {
            let Some(l) = line.push(b) else { continue };
            defmt::info!("[{=usize}] {}", id, l);
            let reply = proto::handle(l, peer, limiter).await;
            defmt::info!("[{=usize}] -> {}", id, reply);
            if matches!(reply, Reply::Nothing) {
                continue;
            }
            if !send(socket, &reply).await || matches!(reply, Reply::Bye) {
                return;
            }
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    defmt::error!("panic: {}", defmt::Display2Format(info));
    cortex_m_semihosting::debug::exit(cortex_m_semihosting::debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::udf();
    }
}

#[cortex_m_rt::exception]
unsafe fn HardFault(frame: &cortex_m_rt::ExceptionFrame) -> ! {
    defmt::error!("hard fault at pc={=u32:#x}", frame.pc());
    cortex_m_semihosting::debug::exit(cortex_m_semihosting::debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::udf();
    }
}
