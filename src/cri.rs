//! The Container Runtime Interface, asked over its unix socket: `runtime.v1.RuntimeService/Status`
//! (what the kubelet asks before it runs a pod), as gRPC over HTTP/2 with prior knowledge, the
//! way containerd and CRI-O serve it. The request and the reply are encoded by hand (protobuf's
//! wire format for two small messages), so there is no generated code and no gRPC stack: `h2`
//! on a private current-thread tokio runtime, every step within one deadline.
//!
//! Owns the protocol only: which socket and what the answer means are the caller's.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

/// A reply larger than this is refused (containerd's verbose Status is a few kB).
const MAX_REPLY: usize = 4 << 20;

/// One `RuntimeCondition` (`RuntimeReady`, `NetworkReady`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Condition {
    pub kind: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// `StatusResponse`: the runtime's conditions and, asked verbosely, its `info` (containerd puts
/// the CRI plugin's resolved configuration under `config`, as JSON).
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub conditions: Vec<Condition>,
    pub info: BTreeMap<String, String>,
}

impl Status {
    /// The condition of that type, if the runtime reported it.
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }
}

/// Asks the CRI at `socket` (a host path) for its verbose Status, within `timeout`.
pub fn status(socket: &Path, timeout: Duration) -> Result<Status> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the CRI client's runtime")?;
    let what = format!("CRI Status on {}", socket.display());
    let reply = rt
        .block_on(async { tokio::time::timeout(timeout, ask(socket)).await })
        .map_err(|_| anyhow!("{what}: no answer within {} ms", timeout.as_millis()))?
        .with_context(|| what.clone())?;
    decode_status(&reply).with_context(|| format!("{what}: a reply that is not a StatusResponse"))
}

/// One unary call: the gRPC message of the reply (without its 5-byte frame header).
async fn ask(socket: &Path) -> Result<Vec<u8>> {
    let io = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let (client, conn) = h2::client::handshake(io)
        .await
        .context("HTTP/2 handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.context("HTTP/2 connection")?;
    let req = http::Request::builder()
        .method("POST")
        .uri("http://localhost/runtime.v1.RuntimeService/Status")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .context("building the request")?;
    let (resp, mut send) = client
        .send_request(req, false)
        .context("sending the request")?;
    // StatusRequest{verbose: true}: field 1, varint 1; after gRPC's uncompressed frame header.
    send.send_data(
        bytes::Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x01]),
        true,
    )
    .context("sending the request body")?;
    let resp = resp.await.context("waiting for the reply")?;
    let (parts, mut body) = resp.into_parts();
    if parts.status != http::StatusCode::OK {
        bail!("HTTP status {} (not a gRPC server?)", parts.status);
    }
    let mut buf = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.context("reading the reply")?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        if buf.len() > MAX_REPLY {
            bail!("reply larger than {MAX_REPLY} bytes");
        }
    }
    // gRPC's status: in the trailers, or in the headers of a trailers-only reply.
    let trailers = body.trailers().await.context("reading the trailers")?;
    let headers = trailers.as_ref().unwrap_or(&parts.headers);
    let code = headers
        .get("grpc-status")
        .or_else(|| parts.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if code != "0" {
        let msg = headers
            .get("grpc-message")
            .or_else(|| parts.headers.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let name = match code {
            "" => "no grpc-status",
            "12" => "UNIMPLEMENTED (not a CRI v1 runtime, or its CRI plugin is disabled)",
            "14" => "UNAVAILABLE",
            _ => "error",
        };
        bail!(
            "gRPC status {code} {name}: {}",
            crate::text::excerpt(msg.as_bytes(), 200)
        );
    }
    match buf.as_slice() {
        [0, a, b, c, d, rest @ ..]
            if u32::from_be_bytes([*a, *b, *c, *d]) as usize == rest.len() =>
        {
            Ok(rest.to_vec())
        }
        [1, ..] => bail!("a compressed reply, which was not asked for"),
        _ => bail!(
            "a reply of {} bytes that is not one gRPC message",
            buf.len()
        ),
    }
}

fn varint(buf: &[u8], i: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*i).context("truncated varint")?;
        *i += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    bail!("varint longer than 10 bytes")
}

/// A protobuf field's value: a varint, or length-delimited bytes.
enum Field<'a> {
    Int(u64),
    Bytes(&'a [u8]),
}

/// The fields of one message, in order.
fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < buf.len() {
        let key = varint(buf, &mut i)?;
        let (num, wire) = (key >> 3, key & 7);
        let v = match wire {
            0 => Field::Int(varint(buf, &mut i)?),
            2 => {
                let n = varint(buf, &mut i)? as usize;
                let end = i.checked_add(n).filter(|e| *e <= buf.len());
                let end = end.context("length past the end")?;
                let b = &buf[i..end];
                i = end;
                Field::Bytes(b)
            }
            other => bail!("unexpected wire type {other} in field {num}"),
        };
        out.push((num, v));
    }
    Ok(out)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `StatusResponse { RuntimeStatus status = 1; map<string, string> info = 2; }`.
pub fn decode_status(buf: &[u8]) -> Result<Status> {
    let mut st = Status::default();
    for (num, v) in fields(buf)? {
        match (num, v) {
            (1, Field::Bytes(rs)) => {
                for (n, c) in fields(rs)? {
                    if let (1, Field::Bytes(c)) = (n, c) {
                        let mut cond = Condition::default();
                        for (k, x) in fields(c)? {
                            match (k, x) {
                                (1, Field::Bytes(b)) => cond.kind = text(b),
                                (2, Field::Int(i)) => cond.status = i != 0,
                                (3, Field::Bytes(b)) => cond.reason = text(b),
                                (4, Field::Bytes(b)) => cond.message = text(b),
                                _ => {}
                            }
                        }
                        st.conditions.push(cond);
                    }
                }
            }
            (2, Field::Bytes(kv)) => {
                let (mut k, mut v) = (String::new(), String::new());
                for (n, x) in fields(kv)? {
                    match (n, x) {
                        (1, Field::Bytes(b)) => k = text(b),
                        (2, Field::Bytes(b)) => v = text(b),
                        _ => {}
                    }
                }
                st.info.insert(k, v);
            }
            _ => {}
        }
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_status_response() {
        // status { conditions { type: "RuntimeReady" status: true } conditions { type:
        // "NetworkReady" reason: "NetworkPluginNotReady" } } info { key: "config" value: "{}" }
        let mut c1 = vec![0x0a, 12];
        c1.extend(b"RuntimeReady");
        c1.extend([0x10, 1]);
        let mut c2 = vec![0x0a, 12];
        c2.extend(b"NetworkReady");
        c2.extend([0x1a, 21]);
        c2.extend(b"NetworkPluginNotReady");
        let mut rs = vec![0x0a, c1.len() as u8];
        rs.extend(&c1);
        rs.push(0x0a);
        rs.push(c2.len() as u8);
        rs.extend(&c2);
        let mut msg = vec![0x0a, rs.len() as u8];
        msg.extend(&rs);
        msg.extend([0x12, 12, 0x0a, 6]);
        msg.extend(b"config");
        msg.extend([0x12, 2]);
        msg.extend(b"{}");
        let st = decode_status(&msg).unwrap();
        assert!(st.condition("RuntimeReady").unwrap().status);
        let n = st.condition("NetworkReady").unwrap();
        assert!(!n.status);
        assert_eq!(n.reason, "NetworkPluginNotReady");
        assert_eq!(st.info["config"], "{}");
        assert!(decode_status(&[0x0a, 50, 1]).is_err());
    }
}
