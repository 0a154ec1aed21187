//! Fuzzes the message decoder: never panics, and whatever decodes re-encodes
//! to the same bytes.

use protocol::signed::AuthorizationClaims;
use protocol::{
    MAX_PACKET_LEN, Request, decode_request, decode_response, encode_request, encode_response,
};

/// The check: panics on a violation.
pub fn check(data: &[u8]) {
    let mut buf = [0u8; MAX_PACKET_LEN];
    if let Ok(request) = decode_request(data) {
        if let Request::RequestPayment(payment) = &request {
            let _ = payment.validate();
        }
        let again = encode_request(&request, &mut buf).expect("a decoded request re-encodes");
        assert_eq!(decode_request(again), Ok(request));
    }
    if let Ok(response) = decode_response(data) {
        let again = encode_response(&response, &mut buf).expect("a decoded response re-encodes");
        assert_eq!(decode_response(again), Ok(response));
    }
    if let Some(claims) = AuthorizationClaims::decode(data) {
        let again = claims.encode().expect("decoded claims re-encode");
        assert_eq!(AuthorizationClaims::decode(&again), Some(claims));
    }
}
