//! Room tokens: HS256 JSON Web Tokens (RFC 7519) whose `room` claim names the room.
//!
//! `exp` and `nbf`, when present, are checked against the caller's clock (no clock is read
//! here); a token without `exp` never expires, so issuers should set one.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

#[derive(Deserialize)]
struct Claims {
    room: Option<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
}

/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;

/// `Ok` when `token` is an HS256 JWT signed with `secret` whose `room` claim is `room`
/// (or `"*"`, any room) and which is valid at `unix_now`. The error is the reason, for the
/// client; it never repeats the token.
pub fn verify(secret: &[u8], token: Option<&str>, room: &str, unix_now: u64) -> Result<(), &'static str> {
    let token = token.ok_or("this server needs a token to join a room")?;
    let mut validation = Validation::new(Algorithm::HS256);
    // Expiry is ours to check, with the caller's clock.
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    // An audience is the issuer's business; the room claim is what binds a token here.
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation)
        .map_err(|_| "token is not a valid HS256 token for this server")?;
    let claims = data.claims;
    if claims.exp.is_some_and(|exp| unix_now > exp.saturating_add(LEEWAY_SECONDS)) {
        return Err("token has expired");
    }
    if claims.nbf.is_some_and(|nbf| unix_now.saturating_add(LEEWAY_SECONDS) < nbf) {
        return Err("token is not valid yet");
    }
    match claims.room.as_deref() {
        Some(r) if r == room || r == "*" => Ok(()),
        Some(_) => Err("token is for another room"),
        None => Err("token has no room claim"),
    }
}

/// Makes a token (for tests and for operators' tooling).
pub fn issue(secret: &[u8], room: &str, exp: Option<u64>) -> String {
    #[derive(serde::Serialize)]
    struct Out<'a> {
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        exp: Option<u64>,
    }
    let header = jsonwebtoken::Header::new(Algorithm::HS256);
    jsonwebtoken::encode(&header, &Out { room, exp }, &jsonwebtoken::EncodingKey::from_secret(secret))
        .expect("HS256 encoding cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn accepts_a_token_for_the_room() {
        let t = issue(b"s3cret", "room1", Some(NOW + 60));
        assert_eq!(verify(b"s3cret", Some(&t), "room1", NOW), Ok(()));
        let any = issue(b"s3cret", "*", None);
        assert_eq!(verify(b"s3cret", Some(&any), "other", NOW), Ok(()));
    }

    #[test]
    fn refuses_wrong_room_secret_expiry_and_garbage() {
        let t = issue(b"s3cret", "room1", Some(NOW + 60));
        assert_eq!(verify(b"s3cret", Some(&t), "room2", NOW), Err("token is for another room"));
        assert!(verify(b"other", Some(&t), "room1", NOW).is_err());
        assert_eq!(verify(b"s3cret", Some(&t), "room1", NOW + 3600), Err("token has expired"));
        assert!(verify(b"s3cret", None, "room1", NOW).is_err());
        for bad in ["", "a.b.c", "....", "eyJhbGciOiJub25lIn0.eyJyb29tIjoicm9vbTEifQ."] {
            assert!(verify(b"s3cret", Some(bad), "room1", NOW).is_err(), "{bad:?}");
        }
        // A flipped signature character.
        let mut tampered = t.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(verify(b"s3cret", Some(std::str::from_utf8(&tampered).unwrap()), "room1", NOW).is_err());
    }
}
