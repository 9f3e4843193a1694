//! HTTP/2 frames followed on the wire by their 9-byte headers, without parsing them: what the
//! client's ping policy (the peer's HEADERS and DATA frames) and the server's control-frame
//! budget (every frame, both ways) count. `h2` owns the protocol; this only follows frame
//! boundaries through the bytes a connection reads or writes, however they are cut.

/// Frame types (RFC 9113 §6).
pub(crate) mod kind {
    pub(crate) const DATA: u8 = 0x0;
    pub(crate) const HEADERS: u8 = 0x1;
    pub(crate) const PRIORITY: u8 = 0x2;
    pub(crate) const RST_STREAM: u8 = 0x3;
    pub(crate) const SETTINGS: u8 = 0x4;
    pub(crate) const PING: u8 = 0x6;
    pub(crate) const GOAWAY: u8 = 0x7;
    pub(crate) const WINDOW_UPDATE: u8 = 0x8;
    pub(crate) const CONTINUATION: u8 = 0x9;
}

/// The ACK flag of SETTINGS and PING frames.
pub(crate) const ACK: u8 = 0x1;
/// The END_STREAM flag of DATA and HEADERS frames.
pub(crate) const END_STREAM: u8 = 0x1;

/// What a frame header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHead {
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    /// The payload's length.
    pub(crate) length: u32,
}

/// Follows frame boundaries through a connection's bytes in one direction.
#[derive(Debug, Default)]
pub(crate) struct FrameScan {
    header: [u8; 9],
    /// Bytes of `header` read so far.
    have: usize,
    /// Bytes still to skip: the current frame's payload, or the connection preface.
    skip: usize,
}

/// The client's connection preface, which comes before its first frame.
const PREFACE_LEN: usize = 24;

impl FrameScan {
    /// A scan of what a server reads: the client's connection preface comes first.
    pub(crate) fn after_preface() -> Self {
        Self {
            skip: PREFACE_LEN,
            ..Self::default()
        }
    }

    /// Reads `bytes`, the next ones in this direction, calling `each` with every frame header
    /// that ends in them.
    pub(crate) fn scan(&mut self, mut bytes: &[u8], mut each: impl FnMut(FrameHead)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                self.have = 0;
                let length = u32::from_be_bytes([0, self.header[0], self.header[1], self.header[2]]);
                self.skip = length as usize;
                each(FrameHead {
                    kind: self.header[3],
                    flags: self.header[4],
                    length,
                });
            }
        }
    }
}

#[cfg(test)]
pub(crate) fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let length = (payload.len() as u32).to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags, 0, 0, 0, 1];
    frame.extend_from_slice(payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_header_is_seen_however_the_bytes_are_cut() {
        // A DATA frame whose payload looks like frame headers of other kinds.
        let bytes = [
            frame(kind::SETTINGS, 0, &[0; 6]),
            frame(kind::HEADERS, END_STREAM, &[0x88]),
            frame(kind::DATA, 0, &frame(kind::PING, 0, &[0; 8])),
            frame(kind::PING, ACK, &[1; 8]),
            frame(kind::DATA, 0, &[]),
        ]
        .concat();
        let kinds = [kind::SETTINGS, kind::HEADERS, kind::DATA, kind::PING, kind::DATA];
        for cut in 1..bytes.len() {
            let mut scan = FrameScan::default();
            let mut seen = Vec::new();
            let (a, b) = bytes.split_at(cut);
            scan.scan(a, |head| seen.push(head.kind));
            scan.scan(b, |head| seen.push(head.kind));
            assert_eq!(seen, kinds, "cut at {cut}");
        }
        let mut scan = FrameScan::default();
        let mut seen = Vec::new();
        for byte in &bytes {
            scan.scan(&[*byte], |head| seen.push(head));
        }
        assert_eq!(
            seen.iter().map(|head| head.kind).collect::<Vec<_>>(),
            kinds,
            "byte by byte"
        );
        assert_eq!(seen[3].flags, ACK);
        assert_eq!(seen[2].length, 17);
    }

    #[test]
    fn a_servers_scan_skips_the_preface() {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(kind::SETTINGS, 0, &[]));
        let mut scan = FrameScan::after_preface();
        let mut seen = Vec::new();
        scan.scan(&bytes, |head| seen.push(head.kind));
        assert_eq!(seen, [kind::SETTINGS]);
    }
}
