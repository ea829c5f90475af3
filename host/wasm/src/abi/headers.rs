//! Header and trailer maps: get/set pairs, get/add/replace/remove one value.

use super::{give, guest_fault, ok, read, read_string, write_u32, Ctx};
use crate::state::{HeaderList, HostState};
use crate::types::{map, Status};
use bytes::Bytes;
use wasmtime::{Linker, Result};

/// Serializes a map the way the SDK reads it: count, (key len, value len) pairs, then
/// NUL-terminated keys and values. An empty map is 4 zero bytes (never the 1-byte form).
pub fn encode_map(h: &HeaderList) -> Vec<u8> {
    let size = 4 + h
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len() + 2)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
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

enum Which {
    Mutable(fn(&mut HostState) -> &mut HeaderList),
    CallResponse(fn(&HostState) -> Option<&HeaderList>),
}

fn which(map_type: i32) -> Option<Which> {
    Some(match map_type {
        map::REQUEST_HEADERS => Which::Mutable(|s| &mut s.cur.req_headers),
        map::REQUEST_TRAILERS => Which::Mutable(|s| &mut s.cur.req_trailers),
        map::RESPONSE_HEADERS => Which::Mutable(|s| &mut s.cur.resp_headers),
        map::RESPONSE_TRAILERS => Which::Mutable(|s| &mut s.cur.resp_trailers),
        map::HTTP_CALL_RESPONSE_HEADERS => {
            Which::CallResponse(|s| s.call_response.as_ref().map(|r| &r.headers))
        }
        map::HTTP_CALL_RESPONSE_TRAILERS => {
            Which::CallResponse(|s| s.call_response.as_ref().map(|r| &r.trailers))
        }
        _ => return None,
    })
}

fn with_map<R>(s: &mut HostState, map_type: i32, f: impl FnOnce(&HeaderList) -> R) -> Option<R> {
    match which(map_type)? {
        Which::Mutable(g) => Some(f(g(s))),
        Which::CallResponse(g) => g(s).map(f),
    }
}

fn with_map_mut<R>(
    s: &mut HostState,
    map_type: i32,
    f: impl FnOnce(&mut HeaderList) -> R,
) -> Option<R> {
    match which(map_type)? {
        Which::Mutable(g) => Some(f(g(s))),
        Which::CallResponse(_) => None,
    }
}

pub(super) fn define(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Ctx<'_>, map_type: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            guest_fault(|| -> Result<i32> {
                // An unknown or absent map reads as empty: the SDK accepts only Ok here.
                let bytes = with_map(c.data_mut(), map_type, encode_map).unwrap_or_default();
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
                let Some(pairs) = decode_map(&raw) else {
                    return ok(Status::BadArgument);
                };
                match with_map_mut(c.data_mut(), map_type, |m| *m = pairs) {
                    Some(()) => ok(Status::Ok),
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
                let key = read_string(&c, kp, kl)?.to_ascii_lowercase();
                let value = with_map(c.data_mut(), map_type, |m| {
                    m.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
                })
                .flatten();
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
                let n = with_map(c.data_mut(), map_type, |m| encode_map(m).len()).unwrap_or(4);
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
                let key = read_string(&c, kp, kl)?.to_ascii_lowercase();
                with_map_mut(c.data_mut(), map_type, |m| m.retain(|(k, _)| *k != key));
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
                with_map_mut(c.data_mut(), map_type, |m| {
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
                });
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
                with_map_mut(c.data_mut(), map_type, |m| m.push((key, value)));
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
