//! ISO 4217 currencies the platform accepts, with their minor-unit exponents.
//!
//! Amounts cross every boundary as integer minor units (cents for EUR); the
//! exponent says where the decimal point goes when a person reads it. The
//! table is deliberately closed: a code that is not listed is rejected, so a
//! typo or an invented currency never reaches the trusted display.

/// A currency known to the platform.
///
/// # Invariants
/// `code` is three upper-case ASCII letters and `exponent` is at most 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

/// (code, minor-unit exponent) for every accepted currency.
const TABLE: &[(&str, u8)] = &[
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PLN", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("TND", 3),
    ("TRY", 2),
    ("USD", 2),
    ("ZAR", 2),
];

impl Currency {
    /// Looks up an ISO 4217 alphabetic code such as `"EUR"`; `None` when it
    /// is not one the platform accepts (lower case is not accepted either).
    pub fn from_code(code: &str) -> Option<Currency> {
        TABLE.iter().find(|(c, _)| *c == code).map(|(c, e)| {
            let b = c.as_bytes();
            Currency {
                code: [b[0], b[1], b[2]],
                exponent: *e,
            }
        })
    }

    /// The three-letter code, for example `"EUR"`.
    pub fn code(&self) -> &str {
        // The table holds ASCII only, so this never fails; fall back to an
        // obviously wrong value rather than panic.
        core::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// The three-letter code as bytes, for example `*b"EUR"`.
    pub fn code_bytes(&self) -> [u8; 3] {
        self.code
    }

    /// Number of decimal places of the minor unit (2 for EUR, 0 for JPY).
    pub fn exponent(&self) -> u8 {
        self.exponent
    }

    /// Every accepted currency, in code order.
    pub fn all() -> impl Iterator<Item = Currency> {
        TABLE.iter().filter_map(|(c, _)| Currency::from_code(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_have_their_exponents() {
        assert_eq!(Currency::from_code("EUR").map(|c| c.exponent()), Some(2));
        assert_eq!(Currency::from_code("JPY").map(|c| c.exponent()), Some(0));
        assert_eq!(Currency::from_code("KWD").map(|c| c.exponent()), Some(3));
        assert_eq!(
            Currency::from_code("EUR").map(|c| c.code() == "EUR"),
            Some(true)
        );
    }

    #[test]
    fn unknown_or_malformed_codes_are_rejected() {
        for bad in ["eur", "EU", "EURO", "XXX", "", "E\u{20ac}R"] {
            assert_eq!(Currency::from_code(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn table_is_sorted_and_well_formed() {
        let codes: Vec<_> = TABLE.iter().map(|(c, _)| *c).collect();
        let mut sorted = codes.clone();
        sorted.sort();
        assert_eq!(codes, sorted);
        for (c, e) in TABLE {
            assert!(c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()));
            assert!(*e <= 3);
        }
    }
}
