//! Read and encode buffers that cost nothing while a connection is idle
//! (issue 16). Most of a device fleet's connections sit idle between
//! PINGREQs; a 4 KiB read buffer and a 4 KiB encode buffer kept for each
//! were a quarter of fleetmq's memory per connection.
//!
//! Reads go through one scratch buffer per thread: `poll_read` fills it
//! and what arrived is copied into the connection's own `BytesMut`, which
//! grows only to what is actually pending. A read that is not ready leaves
//! nothing behind, so the future is cancel-safe like `read_buf`. Once every
//! whole packet is decoded the connection lets its buffers go
//! ([`release_if_empty`]); the next burst allocates what it needs.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes one read may take at most: large enough that a flooding client's
/// PUBLISHes come in few reads.
const SCRATCH_LEN: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
    static TRANSPORT_SCRATCH: RefCell<Box<[u8]>> =
        RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

/// Which per-thread scratch buffer a read goes through.
#[derive(Clone, Copy)]
pub(crate) enum Pool {
    /// The connection's reads of MQTT bytes.
    Connection,
    /// A transport's own reads beneath the connection's (TLS ciphertext,
    /// `transport::tls`): they happen inside a read through the other.
    Transport,
}

/// Reads what the stream has into `inbuf` (appended); `Ok(0)` is the end
/// of the stream. Cancel-safe: nothing is read unless it completes.
pub(crate) async fn read_pooled<S>(stream: &mut S, inbuf: &mut BytesMut) -> io::Result<usize>
where
    S: AsyncRead + Unpin,
{
    std::future::poll_fn(|cx| poll_read_pooled(Pool::Connection, stream, cx, inbuf)).await
}

/// [`read_pooled`] as a poll function, through the scratch buffer of `pool`.
pub(crate) fn poll_read_pooled<S>(
    pool: Pool,
    stream: &mut S,
    cx: &mut Context<'_>,
    inbuf: &mut BytesMut,
) -> Poll<io::Result<usize>>
where
    S: AsyncRead + Unpin,
{
    let scratch = match pool {
        Pool::Connection => &SCRATCH,
        Pool::Transport => &TRANSPORT_SCRATCH,
    };
    scratch.with_borrow_mut(|scratch| {
        let mut rb = ReadBuf::new(scratch);
        ready!(Pin::new(&mut *stream).poll_read(cx, &mut rb))?;
        let got = rb.filled();
        inbuf.extend_from_slice(got);
        Poll::Ready(Ok(got.len()))
    })
}

/// Gives an empty buffer's memory back. Bytes split off it earlier (the
/// payloads of decoded PUBLISHes) keep their own share alive.
///
/// Whatever its capacity says: a buffer whose every byte was split off or
/// written out has none left, yet still holds its allocation (and, once
/// split, the shared header), the CONNECT's for as long as an idle
/// connection lives (heaptrack: 69 bytes of every one, issue 16).
pub(crate) fn release_if_empty(buf: &mut BytesMut) {
    if buf.is_empty() {
        *buf = BytesMut::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Bytes of a connection's future over an in-memory stream, in debug
    /// builds: 1,248 since the CONNECT, the handshake and every rare wait
    /// are boxed (7,400 before: the CONNECT and CONNACK, moved out of
    /// locals, kept their room in the future for the connection's life).
    /// A plain connection's whole cost target is 2 KB (issue 16).
    const FUTURE_BUDGET: usize = 1536;

    #[tokio::test]
    async fn reads_append_and_end_of_stream_reads_zero() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let mut inbuf = BytesMut::new();
        client.write_all(b"abc").await.unwrap();
        assert_eq!(read_pooled(&mut server, &mut inbuf).await.unwrap(), 3);
        client.write_all(b"de").await.unwrap();
        assert_eq!(read_pooled(&mut server, &mut inbuf).await.unwrap(), 2);
        assert_eq!(&inbuf[..], b"abcde");
        drop(client);
        assert_eq!(read_pooled(&mut server, &mut inbuf).await.unwrap(), 0);
        assert_eq!(&inbuf[..], b"abcde");
    }

    #[tokio::test]
    async fn a_read_larger_than_the_scratch_takes_several() {
        let (mut client, mut server) = tokio::io::duplex(4 * SCRATCH_LEN);
        let sent = vec![7u8; SCRATCH_LEN + 10];
        client.write_all(&sent).await.unwrap();
        let mut inbuf = BytesMut::new();
        let first = read_pooled(&mut server, &mut inbuf).await.unwrap();
        assert_eq!(first, SCRATCH_LEN);
        while inbuf.len() < sent.len() {
            read_pooled(&mut server, &mut inbuf).await.unwrap();
        }
        assert_eq!(&inbuf[..], &sent[..]);
    }

    /// A connection's task is its future: transient states (CONNECT read,
    /// handshake, goodbye, linger) are boxed, so that it stays the size of
    /// the read loop (issue 16). Printed so a change shows what it costs.
    #[tokio::test]
    async fn a_connection_future_stays_the_size_of_its_read_loop() {
        let (_ours, theirs) = tokio::io::duplex(64);
        let broker = crate::Broker::allow_anonymous(
            crate::TenantId::parse("dev").unwrap(),
            crate::Config::default(),
        );
        let peer = super::super::Peer {
            addr: "127.0.0.1:9".parse().unwrap(),
            proto: "test",
            certificates: None,
        };
        let serve = super::super::serve(
            theirs,
            peer,
            broker,
            tokio_util::sync::CancellationToken::new(),
            super::super::Admission::unlimited(),
        );
        let size = std::mem::size_of_val(&serve);
        eprintln!("connection future: {size} bytes");
        assert!(size <= FUTURE_BUDGET, "{size} bytes");
    }

    #[test]
    fn a_buffer_split_to_its_end_lets_go_of_what_it_shared() {
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(&[7; 16]);
        let packet = buf.split_to(16).freeze();
        assert_eq!(buf.capacity(), 0);
        assert!(!packet.is_unique(), "shared with the empty buffer");
        release_if_empty(&mut buf);
        assert!(packet.is_unique());
    }

    #[test]
    fn only_an_empty_buffer_is_released() {
        let mut buf = BytesMut::with_capacity(4096);
        buf.extend_from_slice(b"partial");
        release_if_empty(&mut buf);
        assert!(buf.capacity() >= 4096);
        let _ = buf.split();
        release_if_empty(&mut buf);
        assert_eq!(buf.capacity(), 0);
    }
}
