//! The page's stylesheet and script, compiled into the binary. Their URLs
//! carry a hash of their content, so browsers may keep them for a year:
//! a new build's assets have new URLs.

/// FNV-1a, at compile time.
const fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

const fn hex16(mut v: u64) -> [u8; 16] {
    let digits = b"0123456789abcdef";
    let mut out = [0u8; 16];
    let mut i = 16;
    while i > 0 {
        i -= 1;
        out[i] = digits[(v & 15) as usize];
        v >>= 4;
    }
    out
}

pub(crate) const CSS: &str = include_str!("assets/page.css");
pub(crate) const JS: &str = include_str!("assets/page.js");

const CSS_HASH: [u8; 16] = hex16(fnv(CSS.as_bytes()));
const JS_HASH: [u8; 16] = hex16(fnv(JS.as_bytes()));

const fn url(prefix: &'static str, hash: &'static [u8; 16]) -> Url {
    Url { prefix, hash }
}

/// An asset's path and its `?v=` hash.
pub(crate) struct Url {
    prefix: &'static str,
    hash: &'static [u8; 16],
}

impl maud::Render for Url {
    fn render_to(&self, out: &mut String) {
        out.push_str(self.prefix);
        out.push_str("?v=");
        // Only hex digits.
        out.extend(self.hash.iter().map(|&b| b as char));
    }
}

pub(crate) const CSS_URL: Url = url("/assets/page.css", &CSS_HASH);
pub(crate) const JS_URL: Url = url("/assets/page.js", &JS_HASH);

/// `Cache-Control` of the assets.
pub(crate) const CACHE_FOREVER: &str = "public, max-age=31536000, immutable";

#[cfg(test)]
mod tests {
    use super::*;
    use maud::Render;

    #[test]
    fn asset_urls_carry_their_content_hash() {
        let css = CSS_URL.render().into_string();
        assert!(css.starts_with("/assets/page.css?v="), "{css}");
        assert_eq!(css.len(), "/assets/page.css?v=".len() + 16);
        assert_ne!(CSS_HASH, JS_HASH);
        assert_eq!(hex16(0xab), *b"00000000000000ab");
    }
}
