//! The keys under which a tensor's saved slices are stored: TensorFlow's
//! "ordered code" of `(0, name, rank, start_0, length_0, ...)`, where a
//! whole dimension is start 0, length -1.

/// An unsigned number: a length byte, then the value big-endian without
/// leading zero bytes.
fn write_num(out: &mut Vec<u8>, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    out.push((8 - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// A string: 0x00 escaped as 00 ff, 0xff as ff 00, ended by 00 01.
fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        match b {
            0x00 => out.extend_from_slice(&[0x00, 0xff]),
            0xff => out.extend_from_slice(&[0xff, 0x00]),
            b => out.push(b),
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// A signed number: a sign bit, as many length bits as bytes follow the
/// first, a delimiter bit, then the value (two's complement) big-endian;
/// n bytes hold values in [-2^(7n-1), 2^(7n-1)).
fn write_signed(out: &mut Vec<u8>, value: i64) {
    const HEADER: [[u8; 2]; 11] = [
        [0, 0],
        [0x80, 0],
        [0xc0, 0],
        [0xe0, 0],
        [0xf0, 0],
        [0xf8, 0],
        [0xfc, 0],
        [0xfe, 0],
        [0xff, 0],
        [0xff, 0x80],
        [0xff, 0xc0],
    ];
    let magnitude = if value < 0 { !value } else { value } as u64;
    let bits = 64 - magnitude.leading_zeros() as usize + 1;
    let len = bits.div_ceil(7).clamp(1, 10);
    if len == 1 {
        out.push(HEADER[1][0] ^ (value as u8));
        return;
    }
    let sign = if value < 0 { 0xff } else { 0x00 };
    let mut buf = [sign; 10];
    buf[2..].copy_from_slice(&value.to_be_bytes());
    let begin = &mut buf[10 - len..];
    begin[0] ^= HEADER[len][0];
    begin[1] ^= HEADER[len][1];
    out.extend_from_slice(begin);
}

/// The key of one saved slice of tensor `name`; `extents` are
/// `(start, length)` per dimension, length -1 for the whole dimension.
pub fn encode(name: &[u8], extents: &[(i64, i64)]) -> Vec<u8> {
    let mut out = Vec::new();
    write_num(&mut out, 0);
    write_string(&mut out, name);
    write_num(&mut out, extents.len() as u64);
    for &(start, length) in extents {
        write_signed(&mut out, start);
        write_signed(&mut out, length);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_numbers_as_documented() {
        let enc = |v| {
            let mut o = Vec::new();
            write_signed(&mut o, v);
            o
        };
        assert_eq!(enc(0), [0x80]);
        assert_eq!(enc(-1), [0x7f]);
        assert_eq!(enc(63), [0xbf]);
        assert_eq!(enc(-64), [0x40]);
        assert_eq!(enc(64), [0xc0, 0x40]);
        // The two examples of TensorFlow's ordered_code.cc comments.
        assert_eq!(enc(0x424242), [0xf0, 0x42, 0x42, 0x42]);
        assert_eq!(enc(-0x800), [0x38, 0x00]);
        // Order is kept across lengths and signs.
        let values = [
            -70000i64,
            -8193,
            -65,
            -64,
            -1,
            0,
            1,
            63,
            64,
            8191,
            8192,
            1 << 40,
        ];
        for w in values.windows(2) {
            assert!(enc(w[0]) < enc(w[1]), "{} {}", w[0], w[1]);
        }
    }

    #[test]
    fn strings_are_escaped() {
        let mut o = Vec::new();
        write_string(&mut o, b"a\0\xffb");
        assert_eq!(o, b"a\x00\xff\xff\x00b\x00\x01");
    }
}
