//! A tiny scripted WebSocket server for the client's own tests.

use std::{future::Future, net::SocketAddr};

use futures_util::{SinkExt, StreamExt};
use lianxin_protocol::{
    SUBPROTOCOL, Wire,
    codec::{self, Encoded},
    reply as replies,
    v1::{ClientFrame, Event, ServerFrame, client_frame::Request, reply, server_frame},
};
use tokio::{net::TcpStream, task::JoinHandle};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        handshake::server::{ErrorResponse, Request as HttpRequest, Response as HttpResponse},
        http::{HeaderValue, StatusCode},
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};

/// What the upgrade request carried.
#[derive(Debug, Clone, Default)]
pub(crate) struct Handshake {
    pub protocol: Option<String>,
    pub authorization: Option<String>,
}

/// The server side of one accepted connection.
pub(crate) struct MockConn {
    ws: WebSocketStream<TcpStream>,
    pub handshake: Handshake,
    pub peer: SocketAddr,
    /// The wire of the last frame received; replies go out in it.
    pub wire: Wire,
}

impl MockConn {
    /// The next client frame; `None` when the client closed or the connection ended.
    pub async fn recv(&mut self) -> Option<ClientFrame> {
        loop {
            let message = self.ws.next().await?.ok()?;
            match message {
                Message::Binary(bytes) => {
                    self.wire = Wire::Binary;
                    return codec::decode_binary(&bytes, usize::MAX).ok();
                }
                Message::Text(text) => {
                    self.wire = Wire::Json;
                    return codec::decode_json(text.as_str(), usize::MAX).ok();
                }
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// Sends a WebSocket ping and waits for its pong (skipping other messages); false if the
    /// connection ended first.
    pub async fn ping_pong(&mut self, payload: &'static [u8]) -> bool {
        if self.ws.send(Message::Ping(payload.into())).await.is_err() {
            return false;
        }
        while let Some(Ok(message)) = self.ws.next().await {
            if let Message::Pong(got) = message {
                return got.as_ref() == payload;
            }
        }
        false
    }

    /// Sends a server frame in the current wire.
    pub async fn send(&mut self, frame: &ServerFrame) {
        let message = match codec::encode(frame, self.wire) {
            Encoded::Binary(bytes) => Message::Binary(bytes),
            Encoded::Text(text) => Message::Text(text.into()),
        };
        let _ = self.ws.send(message).await;
    }

    /// Replies to request `id`.
    pub async fn reply(&mut self, id: u64, result: reply::Result) {
        self.send(&replies::ok(id, result)).await;
    }

    /// Pushes an event.
    pub async fn event(&mut self, event: Event) {
        let frame = ServerFrame {
            frame: Some(server_frame::Frame::Event(event)),
        };
        self.send(&frame).await;
    }

    /// Answers every request with `answer` until the client goes away.
    pub async fn serve(&mut self, mut answer: impl FnMut(Request) -> reply::Result) {
        while let Some(frame) = self.recv().await {
            let result = match frame.request {
                Some(request) => answer(request),
                None => reply::Result::Error(lianxin_protocol::v1::Error {
                    code: lianxin_protocol::v1::ErrorCode::UnknownRequest as i32,
                    message: "no request".into(),
                }),
            };
            self.reply(frame.id, result).await;
        }
    }

    /// Closes with a code and reason, then waits for the client's close reply.
    pub async fn close(mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
        while let Some(Ok(_)) = self.ws.next().await {}
    }
}

/// Starts a server on 127.0.0.1:0 that accepts one connection (only with the `lianxin.v1`
/// subprotocol) and runs `script` on it. Returns the `ws://` URL and the server task.
pub(crate) async fn start<F, Fut>(script: F) -> std::io::Result<(String, JoinHandle<()>)>
where
    F: FnOnce(MockConn) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/ws", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let Ok((tcp, peer)) = listener.accept().await else {
            return;
        };
        let (hs_tx, hs_rx) = std::sync::mpsc::channel();
        // The callback's signature is tungstenite's; its error type is not ours to shrink.
        #[allow(clippy::result_large_err)]
        let callback = move |request: &HttpRequest, mut response: HttpResponse| {
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let handshake = Handshake {
                protocol: header("sec-websocket-protocol"),
                authorization: header("authorization"),
            };
            let offered = handshake
                .protocol
                .as_deref()
                .is_some_and(|p| p.split(',').any(|p| p.trim() == SUBPROTOCOL));
            let _ = hs_tx.send(handshake);
            if !offered {
                let mut refusal =
                    ErrorResponse::new(Some("subprotocol lianxin.v1 required".into()));
                *refusal.status_mut() = StatusCode::BAD_REQUEST;
                return Err(refusal);
            }
            response.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static(SUBPROTOCOL),
            );
            Ok(response)
        };
        let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
            return;
        };
        let handshake = hs_rx.try_recv().unwrap_or_default();
        script(MockConn {
            ws,
            handshake,
            peer,
            wire: Wire::Binary,
        })
        .await;
    });
    Ok((url, task))
}
