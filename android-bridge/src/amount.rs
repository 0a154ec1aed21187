//! Decimal amounts to integer minor units, with the currency's exponent.
//!
//! No floats: `"12.50"` EUR is 1250 cents, `"1250"` JPY is 1250 yen. More
//! decimals than the currency has (`"12.505"` EUR) are refused, never rounded.

use std::fmt;

use protocol::{Currency, MAX_AMOUNT_MINOR};

/// Why an amount was refused; every variant names the offending text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmountError {
    /// Not an ISO 4217 code the platform accepts.
    UnknownCurrency(String),
    /// Not digits with at most one decimal point.
    NotANumber(String),
    /// More decimal places than the currency's exponent.
    TooManyDecimals {
        amount: String,
        currency: String,
        exponent: u8,
    },
    /// Zero.
    Zero(String),
    /// Above the protocol's maximum.
    TooLarge(String),
}

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AmountError::UnknownCurrency(code) => {
                write!(f, "currency {code:?} is not an accepted ISO 4217 code")
            }
            AmountError::NotANumber(text) => write!(
                f,
                "amount {text:?} is not a decimal number (digits and at most one '.')"
            ),
            AmountError::TooManyDecimals {
                amount,
                currency,
                exponent,
            } => write!(
                f,
                "amount {amount:?} has more than {exponent} decimal place(s), the minor unit of {currency}"
            ),
            AmountError::Zero(text) => write!(f, "amount {text:?} is zero"),
            AmountError::TooLarge(text) => write!(
                f,
                "amount {text:?} is above the maximum of {MAX_AMOUNT_MINOR} minor units"
            ),
        }
    }
}

impl std::error::Error for AmountError {}

/// Looks up an accepted currency.
pub fn currency(code: &str) -> Result<Currency, AmountError> {
    Currency::from_code(code).ok_or_else(|| AmountError::UnknownCurrency(code.into()))
}

/// Parses `"12.50"` in `currency` into minor units.
pub fn parse_amount(text: &str, currency: Currency) -> Result<u64, AmountError> {
    let not_a_number = || AmountError::NotANumber(text.into());
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || text.ends_with('.') {
        return Err(not_a_number());
    }
    let exponent = currency.exponent();
    if fraction.len() > usize::from(exponent) {
        return Err(AmountError::TooManyDecimals {
            amount: text.into(),
            currency: currency.code().into(),
            exponent,
        });
    }
    let too_large = || AmountError::TooLarge(text.into());
    let mut minor: u64 = 0;
    let padding = usize::from(exponent) - fraction.len();
    for b in whole
        .bytes()
        .chain(fraction.bytes())
        .chain(std::iter::repeat_n(b'0', padding))
    {
        minor = minor
            .checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(b - b'0')))
            .ok_or_else(too_large)?;
    }
    if minor == 0 {
        return Err(AmountError::Zero(text.into()));
    }
    if minor > MAX_AMOUNT_MINOR {
        return Err(too_large());
    }
    Ok(minor)
}

/// Formats minor units back to a decimal string (`1250` EUR is `"12.50"`).
pub fn format_amount(minor: u64, currency: Currency) -> String {
    let exponent = usize::from(currency.exponent());
    if exponent == 0 {
        return minor.to_string();
    }
    let digits = format!("{minor:0>width$}", width = exponent + 1);
    let (whole, fraction) = digits.split_at(digits.len() - exponent);
    format!("{whole}.{fraction}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        currency("EUR").expect("EUR")
    }

    #[test]
    fn amounts_use_the_currency_exponent() {
        assert_eq!(parse_amount("12.50", eur()), Ok(1250));
        assert_eq!(parse_amount("12.5", eur()), Ok(1250));
        assert_eq!(parse_amount("12", eur()), Ok(1200));
        assert_eq!(parse_amount("0.01", eur()), Ok(1));
        assert_eq!(
            parse_amount("1250", currency("JPY").expect("JPY")),
            Ok(1250)
        );
        assert_eq!(parse_amount("0.001", currency("KWD").expect("KWD")), Ok(1));
        assert_eq!(format_amount(1250, eur()), "12.50");
        assert_eq!(format_amount(5, eur()), "0.05");
        assert_eq!(format_amount(1250, currency("JPY").expect("JPY")), "1250");
    }

    #[test]
    fn bad_amounts_are_refused_with_the_offending_text() {
        let err = parse_amount("12.505", eur()).expect_err("three decimals");
        assert_eq!(
            err.to_string(),
            "amount \"12.505\" has more than 2 decimal place(s), the minor unit of EUR"
        );
        assert!(matches!(
            parse_amount("1.5", currency("JPY").expect("JPY")),
            Err(AmountError::TooManyDecimals { exponent: 0, .. })
        ));
        for bad in ["", ".5", "12.", "1,50", "-1", "1e3", " 1", "1.2.3", "+1"] {
            assert_eq!(
                parse_amount(bad, eur()),
                Err(AmountError::NotANumber(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_amount("0.00", eur()),
            Err(AmountError::Zero("0.00".into()))
        );
        assert!(matches!(
            parse_amount("99999999999999999999999", eur()),
            Err(AmountError::TooLarge(_))
        ));
        assert!(matches!(
            parse_amount("10000000000.01", eur()),
            Err(AmountError::TooLarge(_))
        ));
        assert_eq!(
            currency("eur"),
            Err(AmountError::UnknownCurrency("eur".into()))
        );
    }
}
