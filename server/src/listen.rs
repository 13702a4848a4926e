//! Accepting connections for every listener: TCP with `TCP_NODELAY`, TLS handshaken off the
//! accept loop (a client that never finishes its handshake holds a task for at most
//! [`Limits::handshake`], never the loop), and the connection's [`Peer`] — its address and
//! the names its client certificate vouches for — carried to the auth layers in the
//! request's extensions. REST and metrics are served here on hyper's HTTP/1 with the
//! slow-client and header limits; gRPC hands the same connections to tonic
//! (`serve_with_incoming`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::tls::{Alpn, Tls};

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The names of a client certificate the CA vouched for (mTLS), most specific first;
    /// empty without one.
    pub cert_names: Arc<[String]>,
}

/// Connection limits (`--header-timeout-secs`, `--max-header-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time a client has to finish its TLS handshake.
    pub handshake: Duration,
    /// Time a client has to send a request's headers, from when the server starts waiting
    /// for them: an idle keep-alive connection is closed after it too.
    pub header_timeout: Duration,
    /// Request line and headers, at most.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handshake: Duration::from_secs(30),
            header_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
        }
    }
}

/// An accepted connection, plain or TLS.
pub struct Conn {
    io: Io,
    pub peer: Peer,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// The connections of `listener`, TLS-wrapped when `tls` is given. The accept loop stops
/// when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<(Arc<Tls>, Alpn)>,
    limits: Limits,
) -> impl futures::Stream<Item = Conn> + Send + Unpin + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Conn>(256);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            let (tcp, addr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, as axum does.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let Some((tls, alpn)) = &tls else {
                let peer = Peer {
                    addr,
                    cert_names: Arc::from([]),
                };
                if tx
                    .send(Conn {
                        io: Io::Plain(tcp),
                        peer,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config(*alpn));
            let tx = tx.clone();
            tokio::spawn(async move {
                let stream =
                    match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%addr, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%addr, "TLS handshake timed out");
                            return;
                        }
                    };
                let cert_names = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|leaf| crate::tls::certificate_names(leaf))
                    .unwrap_or_default();
                let peer = Peer {
                    addr,
                    cert_names: cert_names.into(),
                };
                let _ = tx
                    .send(Conn {
                        io: Io::Tls(Box::new(stream)),
                        peer,
                    })
                    .await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// tonic puts the [`Peer`] in each request's extensions, where [`crate::auth`] reads it.
impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

/// The size of a request's line and headers as sent (give or take the separators).
fn head_bytes<B>(req: &http::Request<B>) -> usize {
    let uri = req.uri();
    let line = req.method().as_str().len()
        + uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + 12;
    req.headers()
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// Serves `app` over HTTP/1.1 on `conns` until `shutdown` resolves, then lets the requests
/// in flight finish (each connection closes after its current response). A client gets
/// [`Limits::header_timeout`] to send a request's headers (a slow-loris client that sends
/// a byte a second is cut off, its connection closed) and [`Limits::max_header_bytes`] of
/// them (431 past that).
pub async fn serve_http(
    mut conns: impl futures::Stream<Item = Conn> + Unpin,
    app: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // hyper's floor is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            c = conns.next() => match c {
                Some(c) => c,
                None => break,
            },
            () = &mut shutdown => break,
        };
        let peer = conn.peer.clone();
        let app = app.clone();
        let max_header_bytes = limits.max_header_bytes;
        let service = hyper::service::service_fn(move |mut req: http::Request<_>| {
            // hyper bounds the buffer a head is read into (a head that arrives in one read
            // may pass it by up to one read); the limit itself is exact here.
            let refused = (head_bytes(&req) > max_header_bytes).then(|| {
                let mut r = axum::response::IntoResponse::into_response((
                    http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    axum::Json(serde_json::json!({"error": format!(
                        "the request line and headers are larger than {max_header_bytes} bytes (--max-header-bytes)"
                    )})),
                ));
                r.headers_mut()
                    .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                r
            });
            req.extensions_mut().insert(peer.clone());
            let app = app.clone();
            async move {
                match refused {
                    Some(r) => Ok(r),
                    None => tower::ServiceExt::oneshot(app, req.map(axum::body::Body::new)).await,
                }
            }
        });
        let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(conn), service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::trace!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(conns);
    graceful.shutdown().await;
}
