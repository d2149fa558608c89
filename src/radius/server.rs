//! The RADIUS socket loop, kept small: receive datagrams on already-bound UDP sockets, drop
//! unknown sources before any work, hand the rest to the [`RadiusHandler`] on a bounded
//! number of tasks (excess dropped and counted), send what it returns. An Access-Reject is
//! held on a tokio timer until `reject_delay` after its arrival, after the task gave its
//! permit back, so held rejects occupy neither a thread nor a slot of [`MAX_IN_FLIGHT`]. Stops when the
//! shutdown token fires, after the requests in progress finished.
//!
//! May depend on: `handler`, `metrics` (what it counts), tokio, socket2 (binding), tokio-util (cancellation, tracking).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handler::RadiusHandler;
use super::metrics::RadiusDropCause;
use super::MAX_PACKET_LEN;
use crate::metrics::NoLabels;

/// Requests processed at once, across all listeners; more are dropped (and counted) so a
/// flood can't queue unbounded work. The NAS retransmits.
pub const MAX_IN_FLIGHT: usize = 256;

/// Access-Rejects held for `reject_delay` at once; beyond this a decided reject is dropped
/// (and counted as overloaded) rather than sent early, which would give the timing away.
/// About 1 KiB each, so the cap bounds what a flood from a client can pin in memory.
pub const MAX_HELD_REJECTS: usize = 65_536;

/// Binds a UDP socket for RADIUS. An IPv6 socket is IPv6-only, so `0.0.0.0:1812` and
/// `[::]:1812` can both be listed.
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Serves RADIUS on `sockets` until `shutdown` fires. Logs `listening for RADIUS on ADDR`
/// for each socket, with its real address (so tests can bind port 0).
pub async fn serve(
    handler: Arc<RadiusHandler>,
    sockets: Vec<UdpSocket>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let held = Arc::new(Semaphore::new(MAX_HELD_REJECTS));
    let requests = TaskTracker::new();
    let mut listeners = tokio::task::JoinSet::new();
    for socket in sockets {
        let local = socket.local_addr()?;
        log::info!("listening for RADIUS on {local}");
        listeners.spawn(receive_loop(
            Arc::new(socket),
            local,
            handler.clone(),
            permits.clone(),
            held.clone(),
            requests.clone(),
            shutdown.clone(),
        ));
    }
    let mut result = Ok(());
    while let Some(finished) = listeners.join_next().await {
        match finished {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shutdown.cancel();
                result = Err(e);
            }
            Err(e) => {
                shutdown.cancel();
                result = Err(io::Error::other(format!("RADIUS listener failed: {e}")));
            }
        }
    }
    requests.close();
    requests.wait().await;
    result
}

async fn receive_loop(
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    handler: Arc<RadiusHandler>,
    permits: Arc<Semaphore>,
    held: Arc<Semaphore>,
    requests: TaskTracker,
    shutdown: CancellationToken,
) -> io::Result<()> {
    // Anything beyond 4096 octets is padding (RFC 2865 §3), so a truncated read is harmless.
    let mut buffer = vec![0u8; MAX_PACKET_LEN];
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            received = socket.recv_from(&mut buffer) => received,
        };
        let (len, source) = match received {
            Ok(received) => received,
            // ICMP errors from earlier sends surface here on some systems; keep serving.
            Err(e) if is_transient(&e) => {
                log::debug!("RADIUS: receive on {local}: {e}");
                continue;
            }
            // Anything else (out of buffers…): say so, pause briefly, keep serving.
            Err(e) => {
                log::warn!("RADIUS: receive on {local} failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = handler.metrics().clone();
        metrics.received.inc(NoLabels);
        if !handler.admits(source.ip(), Instant::now()) {
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.dropped.inc(RadiusDropCause::Overloaded);
            continue;
        };
        let shutdown_hold = shutdown.clone();
        let arrived = Instant::now();
        let datagram = buffer[..len].to_vec();
        let handler = handler.clone();
        let socket = socket.clone();
        let held = held.clone();
        requests.spawn(async move {
            let pending = handler.prepare(local, source, &datagram, arrived).await;
            // A held Access-Reject waits on a timer, without a permit: the delay must not
            // cap how many requests are decided at once.
            drop(permit);
            let Some(pending) = pending else { return };
            if let Some(not_before) = pending.not_before() {
                let Ok(_hold) = held.try_acquire_owned() else {
                    metrics.dropped.inc(RadiusDropCause::Overloaded);
                    handler.abandon(pending);
                    return;
                };
                tokio::select! {
                    _ = tokio::time::sleep_until(not_before.into()) => {}
                    // Shutting down: send what was decided now rather than never.
                    _ = shutdown_hold.cancelled() => {}
                }
            }
            let reply = handler.release(pending);
            if let Err(e) = socket.send_to(&reply, source).await {
                metrics.dropped.inc(RadiusDropCause::SendFailed);
                log::warn!("RADIUS: could not send the reply to {source}: {e}");
            }
        });
    }
}

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}
