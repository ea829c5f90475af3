//! Header and trailer maps: get/set pairs, get/add/replace/remove one value.

use super::{borrow_str, give, guest_fault, ok, read, read_string, write_u32, Ctx};
use crate::state::{HeaderList, HostState};
use crate::types::{map, Status};
use bytes::Bytes;
use wasmtime::{Linker, Result};

fn encoded_len(h: &HeaderList) -> usize {
    4 + h
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len() + 2)
        .sum::<usize>()
}

/// The most a plugin may grow a header map to, serialized (Envoy's largest
/// `max_request_headers_kb`): a loop of adds cannot make the host allocate without bound.
const MAX_MAP_BYTES: usize = 8 << 20;

/// Whether adding `k: v` keeps `m` within [`MAX_MAP_BYTES`].
fn has_room(m: &HeaderList, k: usize, v: usize) -> bool {
    encoded_len(m) + 10 + k + v <= MAX_MAP_BYTES
}

/// Serializes a map the way the SDK reads it: count, (key len, value len) pairs, then
/// NUL-terminated keys and values. An empty map is 4 zero bytes (never the 1-byte form).
pub fn encode_map(h: &HeaderList) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(h));
    out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    for (k, v) in h {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in h {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Parses a serialized map sent by a plugin; `None` if it is malformed.
pub fn decode_map(b: &[u8]) -> Option<HeaderList> {
    if b.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |i: usize| -> Option<usize> {
        Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize)
    };
    let n = u32_at(0)?;
    let mut lens = Vec::with_capacity(n.min(1024));
    for i in 0..n {
        lens.push((u32_at(4 + i * 8)?, u32_at(8 + i * 8)?));
    }
    let mut pos = 4usize.checked_add(n.checked_mul(8)?)?;
    let mut out = Vec::with_capacity(lens.len());
    for (kl, vl) in lens {
        let k = b.get(pos..pos.checked_add(kl)?)?;
        pos += kl + 1;
        let v = b.get(pos..pos.checked_add(vl)?)?;
        pos += vl + 1;
        out.push((
            String::from_utf8_lossy(k).to_ascii_lowercase(),
            Bytes::copy_from_slice(v),
        ));
    }
    Some(out)
}

fn get_map(s: &HostState, map_type: i32) -> Option<&HeaderList> {
    match map_type {
        map::REQUEST_HEADERS => Some(&s.cur.req_headers),
        map::REQUEST_TRAILERS => Some(&s.cur.req_trailers),
        map::RESPONSE_HEADERS => Some(&s.cur.resp_headers),
        map::RESPONSE_TRAILERS => Some(&s.cur.resp_trailers),
        map::HTTP_CALL_RESPONSE_HEADERS => s.call_response.as_ref().map(|r| &r.headers),
        map::HTTP_CALL_RESPONSE_TRAILERS => s.call_response.as_ref().map(|r| &r.trailers),
        _ => None,
    }
}

/// The maps a plugin may change (an `http_call` response is read-only).
fn get_map_mut(s: &mut HostState, map_type: i32) -> Option<&mut HeaderList> {
    match map_type {
        map::REQUEST_HEADERS => Some(&mut s.cur.req_headers),
        map::REQUEST_TRAILERS => Some(&mut s.cur.req_trailers),
        map::RESPONSE_HEADERS => Some(&mut s.cur.resp_headers),
        map::RESPONSE_TRAILERS => Some(&mut s.cur.resp_trailers),
        _ => None,
    }
}

/// Names are kept lowercase; a plugin may ask in any case.
fn is(name: &str, key: &str) -> bool {
    name.eq_ignore_ascii_case(key)
}

pub(super) fn define(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Ctx<'_>, map_type: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                // An unknown or absent map reads as empty: the SDK accepts only Ok here.
                let bytes = get_map(c.data(), map_type)
                    .map(encode_map)
                    .unwrap_or_default();
                give(&mut c, &bytes, ret_ptr, ret_size)?;
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: Ctx<'_>, map_type: i32, ptr: i32, len: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let raw = read(&c, ptr, len)?;
                let Some(pairs) = decode_map(&raw).filter(|p| encoded_len(p) <= MAX_MAP_BYTES)
                else {
                    return ok(Status::BadArgument);
                };
                match get_map_mut(c.data_mut(), map_type) {
                    Some(m) => {
                        *m = pairs;
                        ok(Status::Ok)
                    }
                    None => ok(Status::BadArgument),
                }
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Ctx<'_>,
         map_type: i32,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let key = borrow_str(&c, kp, kl)?;
                let value = get_map(c.data(), map_type)
                    .and_then(|m| m.iter().find(|(k, _)| is(k, key)))
                    .map(|(_, v)| v.clone());
                match value {
                    Some(v) => {
                        give(&mut c, &v, ret_ptr, ret_size)?;
                        ok(Status::Ok)
                    }
                    None => ok(Status::NotFound),
                }
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut c: Ctx<'_>, map_type: i32, ret_size: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let n = get_map(c.data(), map_type).map_or(4, encoded_len);
                write_u32(&mut c, ret_size, n as u32)?;
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Ctx<'_>, map_type: i32, kp: i32, kl: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let key = read_string(&c, kp, kl)?;
                if let Some(m) = get_map_mut(c.data_mut(), map_type) {
                    m.retain(|(k, _)| !is(k, &key));
                }
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: Ctx<'_>, map_type: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let key = read_string(&c, kp, kl)?.to_ascii_lowercase();
                let value = Bytes::from(read(&c, vp, vl)?);
                if let Some(m) = get_map_mut(c.data_mut(), map_type) {
                    if !has_room(m, key.len(), value.len()) {
                        return ok(Status::BadArgument);
                    }
                    match m.iter().position(|(k, _)| *k == key) {
                        Some(i) => {
                            m[i].1 = value;
                            let mut seen = false;
                            m.retain(|(k, _)| {
                                if *k != key {
                                    return true;
                                }
                                let keep = !seen;
                                seen = true;
                                keep
                            });
                        }
                        None => m.push((key, value)),
                    }
                }
                ok(Status::Ok)
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: Ctx<'_>, map_type: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                let key = read_string(&c, kp, kl)?.to_ascii_lowercase();
                let value = Bytes::from(read(&c, vp, vl)?);
                if let Some(m) = get_map_mut(c.data_mut(), map_type) {
                    if !has_room(m, key.len(), value.len()) {
                        return ok(Status::BadArgument);
                    }
                    m.push((key, value));
                }
                ok(Status::Ok)
            })
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_round_trip() {
        let h: HeaderList = vec![
            (":method".into(), Bytes::from("GET")),
            ("x-a".into(), Bytes::from("")),
            ("x-a".into(), Bytes::from("2")),
        ];
        let enc = encode_map(&h);
        assert_eq!(&enc[..4], &3u32.to_le_bytes());
        assert_eq!(decode_map(&enc).unwrap(), h);
        assert_eq!(encode_map(&Vec::new()), vec![0, 0, 0, 0]);
        assert!(decode_map(&[5, 0, 0, 0, 1]).is_none());
    }
}
