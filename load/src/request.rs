//! Request bytes: the Command/Query mix, `user_id` choice, and the pre-built pieces that are
//! copied into a connection's write buffer.
//!
//! # Hot path
//!
//! [`RequestFactory::write_next`] runs once per request. It draws two or three random numbers
//! (class, user, query form), then appends pre-built byte slices: the fixed head, the user id
//! (pre-formatted once per user at start), a decimal `Content-Length` and a 16-hex-digit
//! `client_order_id` written digit by digit. No `format!`, no allocation once the buffer has
//! grown. The unit test `write_next_is_cheap` measures it (well under a microsecond).
//!
//! A Command looks like (body 170–190 bytes depending on the id):
//!
//! ```text
//! POST /api/spot/v2/order HTTP/1.1
//! Host: 127.0.0.1:8080
//! Content-Type: application/json
//! Content-Length: 181
//!
//! {"user_id":"u123","symbol":"BTCUSDT","side":"buy","type":"limit","price":50000.5,
//!  "quantity":1.25,"client_order_id":"0001000000000007","time_in_force":"GTC","post_only":false}
//! ```
//!
//! and a Query `GET /api/spot/user/data HTTP/1.1` with `X-User-Id: u123`, or
//! `GET /api/spot/user/data?user_id=u123 HTTP/1.1`.

use crate::config::{LoadConfig, QueryForm, UserDist};

/// Kind of request, as the router classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Command = 0,
    Query = 1,
}

impl Class {
    pub const ALL: [Class; 2] = [Class::Command, Class::Query];

    pub fn name(self) -> &'static str {
        match self {
            Class::Command => "command",
            Class::Query => "query",
        }
    }
}

/// A small, fast, seedable PRNG (wyrand). Statistical quality is ample for picking users.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; bias < 2^-64 · n, irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Draws a user index in `0..users` (user `i` is named `u{i+1}`).
#[derive(Debug, Clone)]
pub enum UserSampler {
    Uniform {
        users: u64,
    },
    /// Cumulative weights `1/k^s`, normalised to end at 1.0; sampled by binary search.
    Zipf {
        cdf: Vec<f64>,
    },
}

impl UserSampler {
    pub fn new(users: u64, dist: UserDist) -> Self {
        match dist {
            UserDist::Uniform => UserSampler::Uniform { users },
            UserDist::Zipf { exponent } => {
                let mut cdf = Vec::with_capacity(users as usize);
                let mut total = 0.0;
                for k in 1..=users {
                    total += (k as f64).powf(-exponent);
                    cdf.push(total);
                }
                for w in &mut cdf {
                    *w /= total;
                }
                UserSampler::Zipf { cdf }
            }
        }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        match self {
            UserSampler::Uniform { users } => rng.below(*users) as usize,
            UserSampler::Zipf { cdf } => {
                let u = rng.unit_f64();
                cdf.partition_point(|&c| c <= u).min(cdf.len() - 1)
            }
        }
    }
}

const BODY_USER: &[u8] = br#"{"user_id":""#;
const BODY_SIDE: &[u8] = br#"","symbol":"BTCUSDT","side":""#;
const BODY_ORDER: &[u8] =
    br#"","type":"limit","price":50000.5,"quantity":1.25,"client_order_id":""#;
const BODY_TAIL: &[u8] = br#"","time_in_force":"GTC","post_only":false}"#;
const ORDER_ID_DIGITS: usize = 16;

/// Builds request bytes for one run; shared read-only by all worker threads.
#[derive(Debug)]
pub struct RequestFactory {
    /// `POST {path} HTTP/1.1\r\nHost: ..\r\nContent-Type: application/json\r\nContent-Length: `
    command_head: Vec<u8>,
    /// `GET {path} HTTP/1.1\r\nHost: ..\r\nX-User-Id: `
    query_header_head: Vec<u8>,
    /// `GET {path}?user_id=` (or `&user_id=` if the path has a query already)
    query_param_head: Vec<u8>,
    /// ` HTTP/1.1\r\nHost: ..\r\n\r\n`
    query_param_tail: Vec<u8>,
    /// All user ids back to back; user `i` is `user_bytes[user_ends[i-1]..user_ends[i]]`.
    user_bytes: Vec<u8>,
    user_ends: Vec<u32>,
    sampler: UserSampler,
    /// A request is a Command when `rng.next_u64() < command_threshold`.
    command_threshold: u64,
    query_form: QueryForm,
}

impl RequestFactory {
    pub fn new(config: &LoadConfig) -> Self {
        let host = &config.host_header;
        let command_head = format!(
            "POST {} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: ",
            config.command_path
        )
        .into_bytes();
        let query_header_head = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nX-User-Id: ",
            config.query_path
        )
        .into_bytes();
        let separator = if config.query_path.contains('?') {
            '&'
        } else {
            '?'
        };
        let query_param_head = format!("GET {}{separator}user_id=", config.query_path).into_bytes();
        let query_param_tail = format!(" HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();

        let mut user_bytes = Vec::new();
        let mut user_ends = Vec::with_capacity(config.users as usize);
        for i in 1..=config.users {
            user_bytes.push(b'u');
            push_decimal(&mut user_bytes, i);
            user_ends.push(u32::try_from(user_bytes.len()).expect("user id table over 4 GiB"));
        }

        let fraction = config.mix.command_fraction();
        let command_threshold = if fraction >= 1.0 {
            u64::MAX
        } else {
            (fraction * u64::MAX as f64) as u64
        };
        RequestFactory {
            command_head,
            query_header_head,
            query_param_head,
            query_param_tail,
            user_bytes,
            user_ends,
            sampler: UserSampler::new(config.users, config.user_dist),
            command_threshold,
            query_form: config.query_form,
        }
    }

    fn user_id(&self, index: usize) -> &[u8] {
        let start = if index == 0 {
            0
        } else {
            self.user_ends[index - 1] as usize
        };
        &self.user_bytes[start..self.user_ends[index] as usize]
    }

    /// Appends the next request to `out` and says which class it is. `order_seq` becomes the
    /// Command's `client_order_id` (callers keep it unique per run).
    pub fn write_next(&self, rng: &mut Rng, order_seq: u64, out: &mut Vec<u8>) -> Class {
        let is_command = rng.next_u64() < self.command_threshold;
        let user = self.user_id(self.sampler.sample(rng));
        if is_command {
            let side: &[u8] = if order_seq & 1 == 0 { b"buy" } else { b"sell" };
            let body_len = BODY_USER.len()
                + user.len()
                + BODY_SIDE.len()
                + side.len()
                + BODY_ORDER.len()
                + ORDER_ID_DIGITS
                + BODY_TAIL.len();
            out.extend_from_slice(&self.command_head);
            push_decimal(out, body_len as u64);
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(BODY_USER);
            out.extend_from_slice(user);
            out.extend_from_slice(BODY_SIDE);
            out.extend_from_slice(side);
            out.extend_from_slice(BODY_ORDER);
            push_hex16(out, order_seq);
            out.extend_from_slice(BODY_TAIL);
            Class::Command
        } else {
            let use_header = match self.query_form {
                QueryForm::Header => true,
                QueryForm::Query => false,
                QueryForm::Mixed => rng.next_u64() & 1 == 0,
            };
            if use_header {
                out.extend_from_slice(&self.query_header_head);
                out.extend_from_slice(user);
                out.extend_from_slice(b"\r\n\r\n");
            } else {
                out.extend_from_slice(&self.query_param_head);
                out.extend_from_slice(user);
                out.extend_from_slice(&self.query_param_tail);
            }
            Class::Query
        }
    }
}

fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_hex16(out: &mut Vec<u8>, value: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; ORDER_ID_DIGITS];
    for (i, d) in digits.iter_mut().enumerate() {
        *d = HEX[((value >> (60 - 4 * i)) & 0xf) as usize];
    }
    out.extend_from_slice(&digits);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mix;
    use std::net::SocketAddr;

    fn config() -> LoadConfig {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        LoadConfig::new(addr)
    }

    /// Parses one request from `bytes`; returns (method, path, headers, body, consumed).
    fn parse_one(bytes: &[u8]) -> (String, String, Vec<(String, String)>, Vec<u8>, usize) {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(bytes).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("partial request"),
        };
        let hs: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8(h.value.to_vec()).unwrap(),
                )
            })
            .collect();
        let body_len: usize = hs
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let body = bytes[head_len..head_len + body_len].to_vec();
        (
            req.method.unwrap().to_string(),
            req.path.unwrap().to_string(),
            hs,
            body,
            head_len + body_len,
        )
    }

    #[test]
    fn commands_carry_a_json_body_with_user_id_and_exact_length() {
        let mut c = config();
        c.mix = Mix {
            command_weight: 1,
            query_weight: 0,
        };
        c.users = 100_000;
        let factory = RequestFactory::new(&c);
        let mut rng = Rng::new(7);
        let mut buf = Vec::new();
        for seq in 0..200 {
            assert_eq!(factory.write_next(&mut rng, seq, &mut buf), Class::Command);
        }
        let mut at = 0;
        let mut order_ids = std::collections::HashSet::new();
        while at < buf.len() {
            let (method, path, headers, body, used) = parse_one(&buf[at..]);
            at += used;
            assert_eq!(method, "POST");
            assert_eq!(path, "/api/spot/v2/order");
            assert!(headers.contains(&("host".into(), "127.0.0.1:8080".into())));
            assert!(
                (150..=250).contains(&body.len()),
                "body is {} bytes",
                body.len()
            );
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let user = json["user_id"].as_str().unwrap();
            let n: u64 = user.strip_prefix('u').unwrap().parse().unwrap();
            assert!((1..=100_000).contains(&n));
            assert!(order_ids.insert(json["client_order_id"].as_str().unwrap().to_string()));
        }
        assert_eq!(order_ids.len(), 200);
    }

    #[test]
    fn queries_use_header_or_query_parameter() {
        let mut c = config();
        c.mix = Mix {
            command_weight: 0,
            query_weight: 1,
        };
        c.users = 5;
        for (form, want_header, want_param) in [
            (QueryForm::Header, true, false),
            (QueryForm::Query, false, true),
            (QueryForm::Mixed, true, true),
        ] {
            c.query_form = form;
            let factory = RequestFactory::new(&c);
            let mut rng = Rng::new(3);
            let mut buf = Vec::new();
            for seq in 0..100 {
                factory.write_next(&mut rng, seq, &mut buf);
            }
            let (mut saw_header, mut saw_param) = (false, false);
            let mut at = 0;
            while at < buf.len() {
                let (method, path, headers, body, used) = parse_one(&buf[at..]);
                at += used;
                assert_eq!(method, "GET");
                assert!(body.is_empty());
                if let Some((_, v)) = headers.iter().find(|(n, _)| n == "x-user-id") {
                    assert_eq!(path, "/api/spot/user/data");
                    assert!(v.starts_with('u'));
                    saw_header = true;
                } else {
                    assert!(path.starts_with("/api/spot/user/data?user_id=u"), "{path}");
                    saw_param = true;
                }
            }
            assert_eq!(
                (saw_header, saw_param),
                (want_header, want_param),
                "{form:?}"
            );
        }
    }

    #[test]
    fn mix_ratio_is_respected() {
        let factory = RequestFactory::new(&config());
        let mut rng = Rng::new(11);
        let mut buf = Vec::new();
        let commands = (0..20_000)
            .filter(|&seq| {
                buf.clear();
                factory.write_next(&mut rng, seq, &mut buf) == Class::Command
            })
            .count();
        // 30% of 20k = 6000; 3 sigma ~ 200.
        assert!((5700..=6300).contains(&commands), "{commands}");
    }

    #[test]
    fn zipf_prefers_low_ranks_roughly_as_one_over_k() {
        let sampler = UserSampler::new(1000, UserDist::Zipf { exponent: 1.0 });
        let mut rng = Rng::new(5);
        let mut counts = vec![0u32; 1000];
        for _ in 0..200_000 {
            counts[sampler.sample(&mut rng)] += 1;
        }
        // H(1000) ~ 7.485: P(u1) ~ 0.1336, P(u2) ~ 0.0668, P(u10) ~ 0.0134.
        let p = |i: usize| f64::from(counts[i]) / 200_000.0;
        assert!((p(0) - 0.1336).abs() < 0.01, "{}", p(0));
        assert!((p(1) - 0.0668).abs() < 0.006, "{}", p(1));
        assert!((p(9) - 0.0134).abs() < 0.003, "{}", p(9));
        let uniform = UserSampler::new(10, UserDist::Uniform);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[uniform.sample(&mut rng)] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
    }

    #[test]
    fn write_next_is_cheap() {
        let mut c = config();
        c.users = 100_000;
        c.user_dist = UserDist::Zipf { exponent: 1.0 };
        let factory = RequestFactory::new(&c);
        let mut rng = Rng::new(1);
        let mut buf = Vec::with_capacity(1 << 16);
        let n = 200_000u64;
        let started = std::time::Instant::now();
        for seq in 0..n {
            if buf.len() > 60_000 {
                buf.clear();
            }
            factory.write_next(&mut rng, seq, &mut buf);
        }
        let per_request = started.elapsed() / n as u32;
        println!("write_next: {per_request:?} per request");
        // Typically ~50-100 ns in release, a few hundred in debug; the bound only catches
        // an accidental allocation-per-request or quadratic blow-up.
        assert!(
            per_request < std::time::Duration::from_micros(20),
            "{per_request:?}"
        );
    }
}
