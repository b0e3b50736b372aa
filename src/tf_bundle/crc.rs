//! CRC-32C as LevelDB and TensorFlow store it: "masked", so that a CRC of
//! data that itself holds CRCs does not degenerate.

const MASK_DELTA: u32 = 0xa282_ead8;

/// The stored form of a CRC (bundles are only read; tests write them).
#[cfg(test)]
pub fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// The CRC a stored (masked) value stands for.
pub fn unmask(masked: u32) -> u32 {
    masked.wrapping_sub(MASK_DELTA).rotate_left(15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_round_trips() {
        for crc in [0, 1, 0xdead_beef, u32::MAX] {
            assert_eq!(unmask(mask(crc)), crc);
        }
        // The known CRC-32C of "123456789".
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }
}
