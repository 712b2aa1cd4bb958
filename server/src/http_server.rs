//! The HTTP server: an accept loop serving hyper HTTP/1.1 connections with a cap on open
//! connections and a timeout on every wait for the client (`axum::serve` has neither), and
//! graceful shutdown.
//!
//! Invariant: no client holds a connection without making progress. A request head must arrive
//! within the header timeout (counted from the connection's opening for its first request, from
//! its first byte for later ones); a request body within the body timeout (408 after it); the
//! next request on a kept-alive connection within the idle timeout; and a client that reads
//! nothing of a response for the write timeout loses the connection. What handlers do is not
//! timed here: a subscription streams for hours, a query runs until its own timeout.
//!
//! How: [`ConnIo`] wraps the socket and owns the head, idle and write timers; it knows whether
//! a request is being handled from [`Requests`], which [`ConnService`] counts up when hyper hands
//! it a request and down when the response body is dropped (written or abandoned). Body timeouts
//! live in [`DeadlineBody`], since only the handler knows when it waits for the body.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper::body::{Body as HttpBody, Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Sleep;

use crate::api::Problem;
use crate::metrics::Metrics;
use crate::open_files::REFUSING_MAX;

/// The limits of the HTTP server (`--http-*` flags).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Time to send a complete request head.
    pub header_timeout: Duration,
    /// Time to send a whole request body, from when the handler first waits for it.
    pub body_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Time a response write may wait for a client that reads nothing.
    pub write_timeout: Duration,
    /// Connections served at once (at least 1, at most `u32::MAX`).
    pub connections_max: usize,
}

/// A refused connection gets its 503 only if its request head arrives within this (and the
/// header timeout): refusals hold descriptors too, so they must end fast under a flood.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets every
/// connection finish its request in flight (idle ones close at once) and returns when all ended.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let connections_max = limits.connections_max.clamp(1, u32::MAX as usize);
    metrics
        .connections
        .max
        .store(connections_max as u64, Ordering::Relaxed);
    let slots = Arc::new(Semaphore::new(connections_max));
    let refusing = Arc::new(Semaphore::new(REFUSING_MAX));
    let (stop, stopping) = watch::channel(false);
    let api = TowerToHyperService::new(router);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        // Answers leave at once: small exchanges must not wait for Nagle's algorithm.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let slot = Slot::new(permit, metrics.clone());
                let service = ConnService::new(Answer::Api(api.clone()), &limits, &metrics);
                tokio::spawn(serve_connection(
                    stream,
                    service,
                    limits,
                    true,
                    stopping.clone(),
                    slot,
                ));
            }
            Err(_) => {
                metrics.connections.refused.fetch_add(1, Ordering::Relaxed);
                // Beyond the refusals in progress, close at once: answering costs descriptors.
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    let limits = HttpLimits {
                        header_timeout: limits.header_timeout.min(REFUSAL_WAIT),
                        idle_timeout: limits.idle_timeout.min(REFUSAL_WAIT),
                        write_timeout: limits.write_timeout.min(REFUSAL_WAIT),
                        ..limits
                    };
                    let service = ConnService::new(
                        Answer::Refuse {
                            limit: connections_max,
                        },
                        &limits,
                        &metrics,
                    );
                    tokio::spawn(serve_connection(
                        stream,
                        service,
                        limits,
                        false,
                        stopping.clone(),
                        permit,
                    ));
                }
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    // Every served connection holds a slot until it ends: all slots back, all connections ended.
    let _ = slots.acquire_many(connections_max as u32).await;
}

/// Accept errors: a connection that failed before it was accepted is the client's business;
/// anything else (out of descriptors) is logged and retried after a pause, as hyper 0.14 did.
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    ) {
        return;
    }
    tracing::error!("cannot accept a connection: {e}; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A served connection's place under the cap; counted in the open-connections gauge.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Self {
        metrics.connections.open.fetch_add(1, Ordering::Relaxed);
        Self {
            _permit: permit,
            metrics,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics
            .connections
            .open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs one connection until it ends, or until shutdown asks it to finish its request in
/// flight. `_slot` is held until then.
async fn serve_connection<T: Send>(
    stream: TcpStream,
    service: ConnService,
    limits: HttpLimits,
    keep_alive: bool,
    mut stopping: watch::Receiver<bool>,
    _slot: T,
) {
    let io = ConnIo::new(
        stream,
        service.requests.clone(),
        limits,
        service.metrics.clone(),
    );
    let connection = http1::Builder::new()
        .keep_alive(keep_alive)
        // The head timeout is ConnIo's: hyper's runs from the end of the previous response,
        // which would bound idle keep-alive connections by the (short) head timeout.
        .header_read_timeout(None::<Duration>)
        .serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = async { drop(stopping.wait_for(|&stop| stop).await) } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!("connection ended: {e}");
    }
}

/// Requests of one connection handed to the service, and those whose response ended. A
/// request is being handled while they differ.
#[derive(Debug, Default)]
struct Requests {
    started: AtomicU64,
    finished: AtomicU64,
}

impl Requests {
    fn start(self: &Arc<Self>) -> Finished {
        self.started.fetch_add(1, Ordering::SeqCst);
        Finished(self.clone())
    }

    /// `Some(finished)` when no request is being handled.
    fn idle(&self) -> Option<u64> {
        let finished = self.finished.load(Ordering::SeqCst);
        (self.started.load(Ordering::SeqCst) == finished).then_some(finished)
    }
}

/// Counts a request finished when dropped (with its response body, or its handler).
#[derive(Debug)]
struct Finished(Arc<Requests>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::SeqCst);
    }
}

/// What a connection answers.
#[derive(Debug, Clone)]
enum Answer {
    /// The API.
    Api(TowerToHyperService<Router>),
    /// 503 `too_many_connections` to every request, then close.
    Refuse { limit: usize },
}

/// The hyper service of one connection: the API (or a refusal) with request counting and body
/// timeouts.
#[derive(Debug, Clone)]
struct ConnService {
    answer: Answer,
    requests: Arc<Requests>,
    body_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl ConnService {
    fn new(answer: Answer, limits: &HttpLimits, metrics: &Arc<Metrics>) -> Self {
        Self {
            answer,
            requests: Arc::default(),
            body_timeout: limits.body_timeout,
            metrics: metrics.clone(),
        }
    }
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> ResponseFuture {
        let finished = self.requests.start();
        let api = match &self.answer {
            Answer::Api(api) => api,
            Answer::Refuse { limit } => {
                let response = too_many_connections(*limit);
                return Box::pin(std::future::ready(Ok(TrackedBody::wrap(
                    response, finished,
                ))));
            }
        };
        let timed_out = Arc::new(AtomicBool::new(false));
        let body_timeout = self.body_timeout;
        let request = request.map(|body| DeadlineBody::new(body, body_timeout, timed_out.clone()));
        let answer = hyper::service::Service::call(api, request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let Ok(mut response) = answer.await;
            // The handler saw the body fail and answered as it does for unreadable bodies:
            // tell the client what really happened.
            if timed_out.load(Ordering::SeqCst) {
                metrics
                    .connections
                    .body_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                response = request_timeout(body_timeout);
            }
            Ok(TrackedBody::wrap(response, finished))
        })
    }
}

fn too_many_connections(limit: usize) -> axum::response::Response {
    let mut response = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_connections",
        format!(
            "this node serves at most {limit} connections at once (--http-connections-max); \
             retry later, or reuse an open connection"
        ),
    )
    .with("limit", limit)
    .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn request_timeout(body_timeout: Duration) -> axum::response::Response {
    let mut response = Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "the request body did not arrive within {body_timeout:?} (--http-body-timeout); \
             the connection is closed"
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A response body that marks its request finished when dropped.
#[derive(Debug)]
struct TrackedBody {
    inner: axum::body::Body,
    _finished: Finished,
}

impl TrackedBody {
    fn wrap(response: axum::response::Response, finished: Finished) -> Response<TrackedBody> {
        response.map(|inner| TrackedBody {
            inner,
            _finished: finished,
        })
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails (and says so in `timed_out`) when it is not complete within the
/// body timeout of the first time its reader had to wait for it.
#[derive(Debug)]
struct DeadlineBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration, timed_out: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            timeout,
            deadline: None,
            timed_out,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(deadline.as_mut().poll(cx));
        this.timed_out.store(true, Ordering::SeqCst);
        Poll::Ready(Some(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the request body did not arrive in time",
        )
        .into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where a connection is, for [`ConnIo`]'s read timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head: the header timer runs.
    Head,
    /// A request is being handled: no read timer (bodies are timed by [`DeadlineBody`]).
    Busy,
    /// Between requests, no byte of the next one yet: the idle timer runs.
    Idle,
}

/// The socket of a connection, with the read timers (header or idle, by [`Phase`]) and the
/// write timer (a write that stays blocked). A timer that fires fails the read or write with
/// `TimedOut`, and hyper closes the connection.
#[derive(Debug)]
struct ConnIo<T> {
    io: T,
    requests: Arc<Requests>,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    phase: Phase,
    /// `Requests::finished` when the phase was last set.
    finished: u64,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<T> ConnIo<T> {
    /// A new connection: its first request head is due within the header timeout.
    fn new(io: T, requests: Arc<Requests>, limits: HttpLimits, metrics: Arc<Metrics>) -> Self {
        Self {
            io,
            requests,
            limits,
            metrics,
            phase: Phase::Head,
            finished: 0,
            read_timer: Some(Box::pin(tokio::time::sleep(limits.header_timeout))),
            write_timer: None,
        }
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.read_timer = match phase {
            Phase::Head => Some(Box::pin(tokio::time::sleep(self.limits.header_timeout))),
            Phase::Idle => Some(Box::pin(tokio::time::sleep(self.limits.idle_timeout))),
            Phase::Busy => None,
        };
    }

    fn write_stalled<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.write_timer = None;
            return poll;
        }
        let timeout = self.limits.write_timeout;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(timer.as_mut().poll(cx));
        self.write_timer = None;
        self.metrics
            .connections
            .write_timeouts
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!("closing a connection whose client read nothing for {timeout:?}");
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing of the response in time",
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ConnIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.follow_requests();
        let filled = buf.filled().len();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        match &poll {
            Poll::Ready(Ok(())) if this.phase == Phase::Idle && buf.filled().len() > filled => {
                this.enter(Phase::Head);
            }
            Poll::Pending => {
                if let Poll::Ready(e) = this.poll_read_timer(cx) {
                    return Poll::Ready(Err(e));
                }
            }
            _ => {}
        }
        poll
    }
}

impl<T> ConnIo<T> {
    /// Sets the phase from the requests counted by the service.
    fn follow_requests(&mut self) {
        match self.requests.idle() {
            None => {
                if self.phase != Phase::Busy {
                    self.enter(Phase::Busy);
                }
            }
            // A request ended since the phase was set: the wait for the next one begins.
            Some(finished) if finished != self.finished || self.phase == Phase::Busy => {
                self.finished = finished;
                self.enter(Phase::Idle);
            }
            Some(_) => {}
        }
    }

    /// Polls the read timer: pending while it runs (or there is none), the error to fail the
    /// connection with once it fired.
    fn poll_read_timer(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(timer) = &mut self.read_timer else {
            return Poll::Pending;
        };
        ready!(timer.as_mut().poll(cx));
        self.read_timer = None;
        let (counter, what) = match self.phase {
            Phase::Idle => (&self.metrics.connections.idle_timeouts, "idle"),
            _ => (&self.metrics.connections.header_timeouts, "request head"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("closing a connection: {what} timeout");
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} timeout"),
        ))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ConnIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.write_stalled(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.write_stalled(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        let poll = this.write_stalled(cx, poll);
        if let Poll::Ready(Ok(())) = poll {
            // hyper flushes each response after its body ended, and may then wait for the
            // socket without reading again (it read until blocked while the request was being
            // handled): start the idle timer here, so that its firing wakes the connection.
            this.follow_requests();
            if let Poll::Ready(e) = this.poll_read_timer(cx) {
                return Poll::Ready(Err(e));
            }
        }
        poll
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_shutdown(cx);
        this.write_stalled(cx, poll)
    }
}
