//! Tolerating a malformed HTTP/2 `:authority`, as etcd's Go server does.
//!
//! etcdctl 3.4 dials a member it found in the member list (`endpoint status --cluster`) with the
//! whole client URL as the gRPC target, so its requests carry `:authority: http://127.0.0.1:2379`.
//! Go's server ignores the authority; h2 (under hyper and tonic) resets such a stream with
//! PROTOCOL_ERROR. `FixAuthority` sits between the socket and hyper and reads the client's frames:
//! when the first request's header block has a valid authority (every Rust, Go or C client with a
//! plain `host:port` target) it steps aside for the rest of the connection; otherwise it decodes
//! every header block of that connection (HPACK), repairs the authority to `host:port`, and encodes
//! it again for hyper. Only the client-to-server direction is touched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer accepts (SETTINGS_MAX_FRAME_SIZE's initial value).
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is refused (h2 would refuse it too).
const MAX_BLOCK: usize = 1 << 20;
/// HPACK's initial dynamic table size, which the server never raises.
const TABLE_SIZE: usize = 4096;

enum Mode {
    /// Checking the connection preface.
    Preface,
    /// Reading frames until the first header block decides.
    Undecided,
    /// Re-encoding every header block (the first one had a bad authority).
    Rewrite,
    /// Not HTTP/2 with prior knowledge, or a good first authority: bytes pass unchanged.
    Pass,
}

/// A pending header block: its raw frames (to pass on unchanged) and its HPACK fragment.
struct Block {
    raw: BytesMut,
    fragment: Vec<u8>,
    end_stream: bool,
    stream_id: u32,
}

pub struct FixAuthority<S> {
    inner: S,
    mode: Mode,
    /// Bytes read from the socket, not yet looked at.
    input: BytesMut,
    /// Bytes ready for hyper.
    output: BytesMut,
    block: Option<Block>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
}

impl<S> FixAuthority<S> {
    pub fn new(inner: S) -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        FixAuthority {
            inner,
            mode: Mode::Preface,
            input: BytesMut::new(),
            output: BytesMut::new(),
            block: None,
            decoder,
            encoder: Encoder::new(),
        }
    }

    /// Moves what can be decided from `input` to `output`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.mode {
                Mode::Pass => {
                    let all = self.input.split();
                    self.output.unsplit(all);
                    return Ok(());
                }
                Mode::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.mode = Mode::Pass;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    let preface = self.input.split_to(PREFACE.len());
                    self.output.unsplit(preface);
                    self.mode = Mode::Undecided;
                }
                Mode::Undecided | Mode::Rewrite => {
                    if self.input.len() < 9 {
                        return Ok(());
                    }
                    let len = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]])
                        as usize;
                    if self.input.len() < 9 + len {
                        return Ok(());
                    }
                    let frame = self.input.split_to(9 + len);
                    self.frame(frame)?;
                }
            }
        }
    }

    fn frame(&mut self, frame: BytesMut) -> io::Result<()> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[9..];
        let fragment = match kind {
            HEADERS => {
                let mut p = payload;
                let mut pad = 0;
                if flags & PADDED != 0 {
                    let Some((&n, rest)) = p.split_first() else {
                        return self.pass_on(frame);
                    };
                    pad = n as usize;
                    p = rest;
                }
                if flags & PRIORITY != 0 {
                    p = p.get(5..).unwrap_or(&[]);
                }
                if pad > p.len() {
                    return self.pass_on(frame);
                }
                let fragment = p[..p.len() - pad].to_vec();
                self.block = Some(Block {
                    raw: BytesMut::new(),
                    fragment: Vec::new(),
                    end_stream: flags & END_STREAM != 0,
                    stream_id,
                });
                fragment
            }
            CONTINUATION if self.block.is_some() => payload.to_vec(),
            _ => return self.pass_on(frame),
        };
        let block = self.block.as_mut().expect("a header block is open");
        block.fragment.extend_from_slice(&fragment);
        block.raw.unsplit(frame);
        if block.fragment.len() > MAX_BLOCK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "HTTP/2 header block too large",
            ));
        }
        if flags & END_HEADERS != 0 {
            let block = self.block.take().expect("a header block is open");
            self.finish(block)?;
        }
        Ok(())
    }

    /// A frame that is not part of a header block: unchanged.
    fn pass_on(&mut self, frame: BytesMut) -> io::Result<()> {
        self.output.unsplit(frame);
        Ok(())
    }

    fn finish(&mut self, block: Block) -> io::Result<()> {
        let fields = match self.decoder.decode(&block.fragment) {
            Ok(f) => f,
            Err(_) if matches!(self.mode, Mode::Undecided) => {
                // Let h2 answer the broken block itself, with the connection left to it.
                self.output.unsplit(block.raw);
                self.mode = Mode::Pass;
                return Ok(());
            }
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("HTTP/2 header block does not decode: {e:?}"),
                ))
            }
        };
        let bad = fields.iter().any(|(n, v)| {
            n == b":authority" && http::uri::Authority::try_from(v.as_slice()).is_err()
        });
        if matches!(self.mode, Mode::Undecided) {
            if !bad {
                self.output.unsplit(block.raw);
                self.mode = Mode::Pass;
                return Ok(());
            }
            tracing::debug!("client sent a malformed :authority; repairing its header blocks");
            self.mode = Mode::Rewrite;
        }
        let fields: Vec<(Vec<u8>, Vec<u8>)> = fields
            .into_iter()
            .filter_map(|(n, v)| {
                if n == b":authority" {
                    repair(&v).map(|v| (n, v))
                } else {
                    Some((n, v))
                }
            })
            .collect();
        let encoded = self
            .encoder
            .encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut pieces: Vec<&[u8]> = encoded.chunks(MAX_FRAME).collect();
        if pieces.is_empty() {
            pieces.push(&[]);
        }
        let count = pieces.len();
        for (i, chunk) in pieces.into_iter().enumerate() {
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            let mut flags = if i + 1 == count { END_HEADERS } else { 0 };
            if i == 0 && block.end_stream {
                flags |= END_STREAM;
            }
            self.output.put_uint(chunk.len() as u64, 3);
            self.output.put_u8(kind);
            self.output.put_u8(flags);
            self.output.put_u32(block.stream_id);
            self.output.put_slice(chunk);
        }
        Ok(())
    }
}

/// `http://host:port/...` becomes `host:port`; `None` drops a value that is still not an authority.
fn repair(v: &[u8]) -> Option<Vec<u8>> {
    let s = std::str::from_utf8(v).ok()?;
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let s = s.split('/').next().unwrap_or("");
    http::uri::Authority::try_from(s).ok()?;
    Some(s.as_bytes().to_vec())
}

impl<S: AsyncRead + Unpin> AsyncRead for FixAuthority<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if matches!(this.mode, Mode::Pass) && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    // End of stream: hand over whatever is left as it is.
                    let rest = this.input.split();
                    if rest.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    this.output.unsplit(rest);
                    this.mode = Mode::Pass;
                }
                Poll::Ready(Ok(())) => {
                    this.input.extend_from_slice(rb.filled());
                    this.process()?;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FixAuthority<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn headers_frame(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.put_uint(block.len() as u64, 3);
        f.put_u8(HEADERS);
        f.put_u8(flags);
        f.put_u32(stream);
        f.extend_from_slice(block);
        f
    }

    /// Feeds `input` through the shim and decodes the header blocks hyper would see.
    async fn through(input: Vec<u8>) -> (Vec<u8>, Vec<Vec<(Vec<u8>, Vec<u8>)>>) {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&input).await.unwrap();
        drop(client);
        let mut out = Vec::new();
        FixAuthority::new(server)
            .read_to_end(&mut out)
            .await
            .unwrap();
        let mut blocks = Vec::new();
        let mut dec = Decoder::new();
        let mut rest = out.strip_prefix(PREFACE).unwrap_or(&[]);
        while rest.len() >= 9 {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            if rest[3] == HEADERS {
                blocks.push(dec.decode(&rest[9..9 + len]).unwrap());
            }
            rest = &rest[9 + len..];
        }
        (out, blocks)
    }

    fn request(enc: &mut Encoder, authority: &[u8]) -> Vec<u8> {
        enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/etcdserverpb.Maintenance/Status"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
        ])
    }

    #[tokio::test]
    async fn a_good_authority_passes_byte_for_byte() {
        let mut enc = Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(
            1,
            END_HEADERS,
            &request(&mut enc, b"127.0.0.1:2379"),
        ));
        input.extend(headers_frame(3, END_HEADERS, &request(&mut enc, b"x y")));
        let (out, _) = through(input.clone()).await;
        assert_eq!(out, input);
    }

    #[tokio::test]
    async fn a_url_as_authority_is_repaired_on_every_request() {
        let mut enc = Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(
            1,
            END_HEADERS | END_STREAM,
            &request(&mut enc, b"http://127.0.0.1:2379"),
        ));
        input.extend(headers_frame(
            3,
            END_HEADERS,
            &request(&mut enc, b"http://127.0.0.1:2379"),
        ));
        let (out, blocks) = through(input).await;
        assert_eq!(blocks.len(), 2);
        for b in &blocks {
            let auth = b.iter().find(|(n, _)| n == b":authority").unwrap();
            assert_eq!(auth.1, b"127.0.0.1:2379");
            assert!(b
                .iter()
                .any(|(n, v)| n == b":path" && v.starts_with(b"/etcd")));
        }
        assert_eq!(out[PREFACE.len() + 4], END_HEADERS | END_STREAM);
    }

    #[tokio::test]
    async fn http1_passes_unchanged() {
        let input = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let (out, _) = through(input.clone()).await;
        assert_eq!(out, input);
    }
}
