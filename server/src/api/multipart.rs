//! `multipart/form-data` (RFC 7578) read from a body already in memory and
//! bounded: the parts are slices of it, never copies; the number of parts and
//! the size of each part's headers are capped.

use bytes::Bytes;

use crate::error::{Error, Result};

/// One part of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Bytes,
}

/// Most bytes of one part's headers.
const MAX_PART_HEADERS: usize = 8 << 10;

fn bad(m: impl Into<String>) -> Error {
    Error::InvalidRequest(format!("multipart/form-data: {}", m.into()))
}

/// The boundary of a `multipart/form-data` content type, if it is one.
pub fn boundary(content_type: &str) -> Option<Result<String>> {
    let mut fields = content_type.split(';');
    let essence = fields.next()?.trim().to_ascii_lowercase();
    if essence != "multipart/form-data" {
        return None;
    }
    let boundary = fields
        .filter_map(|f| f.split_once('='))
        .find_map(|(k, v)| k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string()));
    Some(match boundary {
        Some(b) if (1..=70).contains(&b.len()) => Ok(b),
        _ => Err(bad("the content type needs a boundary of 1 to 70 characters")),
    })
}

/// The parts of a form body, at most `max_parts` of them.
pub fn parse(body: &Bytes, boundary: &str, max_parts: usize) -> Result<Vec<Part>> {
    let delimiter = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(delimiter.as_bytes());
    let next_delimiter = format!("\r\n--{boundary}");
    let next = memchr::memmem::Finder::new(next_delimiter.as_bytes());
    // The first delimiter: at the start, or after a preamble that ends in CRLF.
    let mut at = match finder.find(body) {
        Some(0) => delimiter.len(),
        Some(_) => next.find(body).map(|i| i + next_delimiter.len()).ok_or_else(|| bad("no boundary line"))?,
        None => return Err(bad("the body holds no boundary line")),
    };
    let mut parts = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding, then CRLF.
        let line_end = memchr::memmem::find(rest, b"\r\n").ok_or_else(|| bad("a boundary line does not end"))?;
        if rest[..line_end].iter().any(|b| !matches!(b, b' ' | b'\t')) {
            return Err(bad("a boundary line is followed by text"));
        }
        let start = at + line_end + 2;
        let head_len = memchr::memmem::find(&body[start..body.len().min(start + MAX_PART_HEADERS + 4)], b"\r\n\r\n")
            .ok_or_else(|| bad(format!("a part's headers are longer than {MAX_PART_HEADERS} bytes or do not end")))?;
        let head =
            std::str::from_utf8(&body[start..start + head_len]).map_err(|_| bad("a part's headers are not UTF-8"))?;
        let data_start = start + head_len + 4;
        let data_len = next.find(&body[data_start..]).ok_or_else(|| bad("the last part has no closing boundary"))?;
        if parts.len() == max_parts {
            return Err(Error::InvalidInput(format!("a form may hold at most {max_parts} parts")));
        }
        let mut part = Part {
            name: String::new(),
            filename: None,
            content_type: None,
            data: body.slice(data_start..data_start + data_len),
        };
        for line in head.split("\r\n") {
            let Some((name, value)) = line.split_once(':') else {
                return Err(bad(format!("bad header line '{line}'")));
            };
            let value = value.trim();
            if name.trim().eq_ignore_ascii_case("content-type") {
                part.content_type = Some(value.to_ascii_lowercase());
            } else if name.trim().eq_ignore_ascii_case("content-disposition") {
                let fields = split_params(value);
                if !fields.first().is_some_and(|d| d.trim().eq_ignore_ascii_case("form-data")) {
                    return Err(bad("a part's Content-Disposition is not form-data"));
                }
                for field in &fields[1..] {
                    let Some((k, v)) = field.split_once('=') else { continue };
                    let v = v.trim().trim_matches('"').to_string();
                    match k.trim().to_ascii_lowercase().as_str() {
                        "name" => part.name = v,
                        "filename" => part.filename = Some(v),
                        _ => {}
                    }
                }
            }
        }
        if part.name.is_empty() {
            return Err(bad("a part has no name in its Content-Disposition"));
        }
        parts.push(part);
        at = data_start + data_len + next_delimiter.len();
    }
}

/// A header value's `;`-separated fields, a `;` inside a quoted string kept.
fn split_params(value: &str) -> Vec<&str> {
    let (mut fields, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                fields.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    fields.push(&value[start..]);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Bytes {
        let mut body = b"preamble\r\n".to_vec();
        for (name, file, data) in parts {
            body.extend_from_slice(b"--XyZ\r\n");
            match file {
                Some(f) => body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: image/png\r\n\r\n").as_bytes(),
                ),
                None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
            }
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--XyZ--\r\n");
        Bytes::from(body)
    }

    #[test]
    fn parts_are_read_with_their_names_files_and_bytes() {
        let body = form(&[("image", Some("a.png"), b"\x89PNG\r\n--Xy\r\n"), ("top_k", None, b"3")]);
        let parts = parse(&body, "XyZ", 8).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].name.as_str(), parts[0].filename.as_deref()), ("image", Some("a.png")));
        assert_eq!(parts[0].content_type.as_deref(), Some("image/png"));
        assert_eq!(&parts[0].data[..], b"\x89PNG\r\n--Xy\r\n");
        assert_eq!((parts[1].name.as_str(), &parts[1].data[..]), ("top_k", &b"3"[..]));
        assert_eq!(boundary("multipart/form-data; boundary=\"XyZ\"").unwrap().unwrap(), "XyZ");
        assert!(boundary("application/json").is_none());
        assert!(boundary("multipart/form-data").unwrap().is_err());
        // A ; inside a quoted file name is part of the name.
        let body = form(&[("image", Some("a; name=top_k.png"), b"x")]);
        let parts = parse(&body, "XyZ", 8).unwrap();
        assert_eq!((parts[0].name.as_str(), parts[0].filename.as_deref()), ("image", Some("a; name=top_k.png")));
    }

    #[test]
    fn broken_and_oversized_forms_are_refused() {
        let body = form(&[("image", Some("a.png"), b"x"), ("image", Some("b.png"), b"y")]);
        assert!(parse(&body, "XyZ", 1).unwrap_err().to_string().contains("at most 1 parts"));
        let cut = body.slice(..body.len() - 12);
        assert!(parse(&cut, "XyZ", 8).unwrap_err().to_string().contains("closing boundary"));
        assert!(parse(&Bytes::from_static(b"no boundary"), "XyZ", 8).is_err());
        let mut long = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\nX-Pad: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_PART_HEADERS + 10));
        long.extend_from_slice(b"\r\n\r\nbody\r\n--XyZ--");
        assert!(parse(&Bytes::from(long), "XyZ", 8).unwrap_err().to_string().contains("headers are longer"));
    }
}
