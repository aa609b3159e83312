//! Per-thread chunks for the small byte strings a request lives with: the client's head as
//! read, a backend's response head and small body pieces, the request id, the forwarding
//! header. Each is a [`Bytes`] slice of a shared chunk, so it costs no allocation of its own,
//! and slicing it further (header values out of a head) costs none either; a chunk is one
//! allocation for hundreds of requests.
//!
//! Why: with glibc's allocator each small `Bytes` was two allocations (the copy, and the
//! shared count made when it is first sliced), and with many requests in flight most of them
//! missed the per-thread cache and took the slow path: about a sixth of the proxy's
//! instructions per request went to `malloc` and `free`.
//!
//! What it costs: a chunk lives until the last slice of it is dropped, so a request that lives
//! long keeps its chunk (shared with the requests around it) alive. Strings larger than
//! [`LARGEST`] get an allocation of their own. Nothing made here may outlive its request: a
//! value kept longer is copied out first ([`own`]): the access log's request id, the bytes a
//! connection handed to hyper starts with, and every header value of an HTTP/2 message, whose
//! header compression table keeps values for the connection's life (shared with an equal value
//! owned already, as most of a backend's fields are).
//!
//! The header maps of the common exchange (the client's request, the backend's response), the
//! buffers responses are written from and the extension maps requests carry their client in are
//! reused the same way: emptied when their message is done with them, kept per thread, and
//! taken by the next message, which saves their allocations.

use std::cell::RefCell;
use std::thread::LocalKey;

use bytes::{BufMut, Bytes, BytesMut};
use http::{Extensions, HeaderMap, HeaderName, HeaderValue};

/// Bytes in a chunk. When a chunk has too little room left, a new one is started, or the same
/// one is reused from its start if no slice of it is alive any more.
const CHUNK: usize = 32 * 1024;

/// The largest string copied into a chunk.
pub const LARGEST: usize = 8 * 1024;

/// Empty maps and buffers kept per thread, of each kind: enough for the messages made between
/// two returns.
const KEPT: usize = 64;

/// A larger map is dropped rather than kept: a message with many fields is rare, and its map
/// would hold its room for every later one.
const LARGEST_MAP: usize = 48;

/// The largest write buffer kept, for the same reason.
const LARGEST_BUFFER: usize = 16 * 1024;

thread_local! {
    static CURRENT: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static EXTENSIONS: RefCell<Vec<Extensions>> = const { RefCell::new(Vec::new()) };
    static OWNED: RefCell<Owned> = const {
        RefCell::new(Owned { slots: [const { None }; OWNED_SLOTS], next: 0 })
    };
}

/// An empty header map with room for `fields`: one this thread kept, or a new one.
pub fn header_map(fields: usize) -> HeaderMap {
    match take_kept(&MAPS) {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Keeps `map`, emptied, for a later [`header_map`].
pub fn recycle(mut map: HeaderMap) {
    // Both: repeated fields take room the capacity does not count.
    if map.capacity() <= LARGEST_MAP && map.len() <= LARGEST_MAP {
        map.clear();
        keep(&MAPS, map);
    }
}

/// A copy of `value` in an allocation of its own, for a value that may outlive its request (an
/// access log entry, HTTP/2's header compression table): a slice of a chunk would keep the
/// whole chunk.
pub fn own(value: &HeaderValue) -> HeaderValue {
    let mut owned = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(value.as_bytes()))
        .expect("a copy of a valid header value is valid");
    owned.set_sensitive(value.is_sensitive());
    owned
}

/// Every value of `headers` that HTTP/2's header compression may keep, made [`own`], or shared
/// with an equal one this thread owned already. A sensitive value is sent as a literal never
/// indexed (RFC 7541 section 6.2.3), so it is not kept past its response, and not copied.
pub fn own_all(headers: &mut HeaderMap) {
    OWNED.with(|owned| {
        let mut owned = owned.borrow_mut();
        for (name, value) in headers.iter_mut() {
            if !value.is_sensitive() {
                *value = owned.share(name, value);
            }
        }
    });
}

/// Values [`own_all`] made lately, one per name, in a few slots. A backend sends the same
/// `server` and `content-type` in every response, and the same `date` all second: an equal
/// value is shared (a count), where owning it again would cost an allocation, a copy, a check
/// of its bytes and, when the message is done, a free.
struct Owned {
    slots: [Option<(HeaderName, HeaderValue)>; OWNED_SLOTS],
    /// The slot a new name takes.
    next: usize,
}

const OWNED_SLOTS: usize = 8;

impl Owned {
    /// `value` (of a field named `name`) owned: the value kept for `name` if it is equal, else
    /// a copy, kept in its place.
    fn share(&mut self, name: &HeaderName, value: &HeaderValue) -> HeaderValue {
        let named = self
            .slots
            .iter()
            .position(|slot| slot.as_ref().is_some_and(|(kept, _)| kept == name));
        let slot = match named {
            Some(slot) => match &self.slots[slot] {
                Some((_, kept)) if kept.as_bytes() == value.as_bytes() => return kept.clone(),
                _ => slot,
            },
            None => {
                let slot = self.next;
                self.next = (slot + 1) % OWNED_SLOTS;
                slot
            }
        };
        let owned = own(value);
        self.slots[slot] = Some((name.clone(), owned.clone()));
        owned
    }
}

/// An empty buffer with room for `bytes`: one this thread kept, or a new one.
pub fn buffer(bytes: usize) -> Vec<u8> {
    let mut buffer = take_kept(&BUFFERS).unwrap_or_default();
    buffer.reserve(bytes);
    buffer
}

/// Keeps `buffer`, emptied, for a later [`buffer`].
pub fn recycle_buffer(mut buffer: Vec<u8>) {
    if buffer.capacity() <= LARGEST_BUFFER {
        buffer.clear();
        keep(&BUFFERS, buffer);
    }
}

/// An empty extension map: one this thread kept (its table already made), or a new one. The
/// first value put into a new map allocates the map and its table, besides the value.
pub fn extensions() -> Extensions {
    take_kept(&EXTENSIONS).unwrap_or_default()
}

/// Keeps `extensions`, emptied, for a later [`extensions`].
pub fn recycle_extensions(mut extensions: Extensions) {
    extensions.clear();
    keep(&EXTENSIONS, extensions);
}

fn take_kept<T: 'static>(kept: &'static LocalKey<RefCell<Vec<T>>>) -> Option<T> {
    kept.try_with(|kept| kept.borrow_mut().pop()).ok().flatten()
}

fn keep<T: 'static>(kept: &'static LocalKey<RefCell<Vec<T>>>, item: T) {
    // Only fails while the thread is ending: the item is dropped instead.
    let _ = kept.try_with(|kept| {
        let mut kept = kept.borrow_mut();
        if kept.len() < KEPT {
            kept.push(item);
        }
    });
}

/// `bytes`, copied into this thread's chunk.
pub fn copy(bytes: &[u8]) -> Bytes {
    if bytes.len() > LARGEST {
        return Bytes::copy_from_slice(bytes);
    }
    let (copied, ()) = fill(bytes.len(), |chunk| chunk.put_slice(bytes));
    copied
}

/// Runs `write` on this thread's chunk, with room for at least `room` bytes (at most
/// [`LARGEST`]), and returns what it appended and what it returned.
pub fn fill<R>(room: usize, write: impl FnOnce(&mut BytesMut) -> R) -> (Bytes, R) {
    debug_assert!(
        room <= LARGEST,
        "a chunk has room for {LARGEST} bytes at a time"
    );
    // Taken by whichever runs: the thread's chunk, or (only while the thread itself is ending
    // and its chunk is gone) a buffer of its own.
    let mut write = Some(write);
    let mut run = |chunk: &mut BytesMut| write.take().map(|write| write(chunk));
    let on_this_thread = CURRENT.try_with(|current| {
        let mut chunk = current.borrow_mut();
        if chunk.capacity() < room {
            // Reclaims the chunk if every slice of it is gone; else allocates a new one.
            chunk.reserve(CHUNK);
        }
        let result = run(&mut chunk);
        (take(&mut chunk), result)
    });
    let (bytes, result) = on_this_thread.unwrap_or_else(|_| {
        let mut own = BytesMut::with_capacity(room);
        let result = run(&mut own);
        (own.freeze(), result)
    });
    (bytes, result.expect("`write` runs exactly once"))
}

/// What `chunk` holds, split off; nothing (and no share of the chunk) when it holds nothing.
fn take(chunk: &mut BytesMut) -> Bytes {
    if chunk.is_empty() {
        Bytes::new()
    } else {
        chunk.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_equal_and_share_a_chunk() {
        let a = copy(b"GET / HTTP/1.1\r\n\r\n");
        let b = copy(b"0123456789abcdef");
        assert_eq!(a, &b"GET / HTTP/1.1\r\n\r\n"[..]);
        assert_eq!(b, &b"0123456789abcdef"[..]);
        let gap = b.as_ptr() as usize - a.as_ptr() as usize;
        assert_eq!(
            gap,
            a.len(),
            "the second copy follows the first in the same chunk"
        );
    }

    #[test]
    fn a_chunk_is_reused_once_no_slice_of_it_is_alive() {
        let first = copy(&[1; LARGEST]);
        let start = first.as_ptr();
        drop(first);
        // Fill the rest of the chunk; the copy that finds no room left starts it over.
        let reused = (0..CHUNK / LARGEST).any(|_| copy(&[2; LARGEST]).as_ptr() == start);
        assert!(reused, "a chunk no slice holds is reused, not replaced");
    }

    #[test]
    fn a_live_slice_keeps_its_bytes_when_the_chunk_moves_on() {
        let kept = copy(b"kept");
        for _ in 0..(2 * CHUNK / LARGEST) {
            copy(&[0xff; LARGEST]);
        }
        assert_eq!(kept, &b"kept"[..]);
    }

    #[test]
    fn a_recycled_map_comes_back_empty_with_its_room() {
        let mut map = header_map(8);
        map.insert("x-a", "1".parse().unwrap());
        let room = map.capacity();
        recycle(map);
        let again = header_map(4);
        assert!(
            again.is_empty(),
            "a recycled map holds nothing of its last message"
        );
        assert_eq!(again.capacity(), room, "and keeps its room");
        let bigger = header_map(40);
        assert!(bigger.capacity() >= 40);
    }

    #[test]
    fn a_large_map_is_not_kept() {
        let mut map = HeaderMap::with_capacity(LARGEST_MAP + 1);
        map.insert("x-a", "1".parse().unwrap());
        recycle(map);
        let mut repeated = HeaderMap::with_capacity(4);
        for _ in 0..=LARGEST_MAP {
            repeated.append("set-cookie", "a=b".parse().unwrap());
        }
        recycle(repeated);
        assert!(MAPS.with_borrow(Vec::is_empty), "neither map is kept");
    }

    #[test]
    fn an_owned_value_shares_nothing_with_the_chunk() {
        let id = HeaderValue::from_maybe_shared(copy(b"0123abcd")).unwrap();
        let mut secret = HeaderValue::from_maybe_shared(copy(b"token")).unwrap();
        secret.set_sensitive(true);
        let (owned, owned_secret) = (own(&id), own(&secret));
        assert_eq!(owned, id);
        assert!(owned_secret.is_sensitive());
        let next_in_chunk = copy(b"next");
        assert_ne!(
            owned.as_bytes().as_ptr(),
            id.as_bytes().as_ptr(),
            "a copy, not a slice"
        );
        assert_ne!(
            owned.as_bytes().as_ptr_range().end,
            next_in_chunk.as_ptr(),
            "not in the chunk either"
        );
        let mut headers = HeaderMap::new();
        headers.append("x-a", id.clone());
        headers.append("x-a", secret.clone());
        own_all(&mut headers);
        let values: Vec<_> = headers.get_all("x-a").iter().collect();
        assert_eq!(values, [&id, &secret]);
        assert!(values[1].is_sensitive());
    }

    #[test]
    fn owned_values_are_shared_when_equal_and_copied_when_not() {
        let owned_for = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.append(
                "server",
                HeaderValue::from_maybe_shared(copy(value.as_bytes())).unwrap(),
            );
            own_all(&mut headers);
            headers["server"].clone()
        };
        let first = owned_for("backend/1.0");
        let again = owned_for("backend/1.0");
        assert_eq!(again, "backend/1.0");
        assert_eq!(
            first.as_bytes().as_ptr(),
            again.as_bytes().as_ptr(),
            "an equal value shares the owned one"
        );
        let other = owned_for("backend/2.0");
        assert_eq!(other, "backend/2.0", "a different value is its own copy");
        assert_ne!(other.as_bytes().as_ptr(), first.as_bytes().as_ptr());
        // More names than slots: each value is still its own, whatever was evicted.
        for i in 0..3 * OWNED_SLOTS {
            let mut headers = HeaderMap::new();
            let name = HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap();
            headers.append(&name, HeaderValue::from_str(&format!("v{i}")).unwrap());
            own_all(&mut headers);
            assert_eq!(headers[&name], format!("v{i}").as_str());
        }
    }

    #[test]
    fn large_strings_get_their_own_allocation() {
        let large = vec![7; LARGEST + 1];
        assert_eq!(copy(&large), large);
    }

    #[test]
    fn fill_returns_only_what_was_written() {
        let (empty, ()) = fill(16, |_| {});
        assert!(empty.is_empty());
        let (written, count) = fill(16, |chunk| {
            chunk.put_slice(b"abc");
            3
        });
        assert_eq!((written, count), (Bytes::from_static(b"abc"), 3));
    }

    #[test]
    fn a_kept_extension_map_comes_back_empty() {
        let mut map = extensions();
        map.insert(7_u32);
        recycle_extensions(map);
        let mut again = extensions();
        assert!(again.is_empty(), "what the last request carried is gone");
        again.insert(8_u32);
        assert_eq!(again.get::<u32>(), Some(&8));
    }
}
