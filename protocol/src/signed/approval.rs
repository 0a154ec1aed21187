//! The canonical transaction statement: the exact words the approval screen shows and the
//! payment app signs. `trusted-ui` draws it; `payment-app` signs it; both take it from here.
//!
//! What-you-see-is-what-you-sign rests on this module. [`approval_text`] turns an
//! [`ApprovalView`] into one deterministic string, line by line:
//!
//! ```text
//! Pay
//! 12.50 EUR
//! to Corner Cafe
//! with Visa ending 4242
//! ```
//!
//! The approval screen draws exactly these lines (plus things that are not signed: the
//! security word, hints and buttons), and the payment app signs exactly this string.
//!
//! Amounts are integer minor units; the currency's exponent places the decimal point. There
//! are no floats, no thousands separators and no locale: the same inputs always give the
//! same bytes.
//!
//! Free text (merchant, credential label, security word) must be printable ASCII
//! (`' '..='~'`), non-empty, without leading or trailing spaces, and within a per-field
//! length (the rule of [`crate::is_display_text`]). Anything else is refused with a
//! [`TextError`] naming the field, so the screen never has to draw a glyph the font lacks,
//! a control character, or a look-alike letter.

use core::fmt::{self, Write as _};

use crate::Currency;
use heapless::String;

/// Capacity in bytes of the statement returned by [`approval_text`].
///
/// The longest statement is `"Pay\n"` + a 25-byte amount + `"\nto "` + the merchant +
/// `"\nwith "` + the label, well under this.
pub const APPROVAL_TEXT_CAPACITY: usize = 128;

/// Capacity in bytes of a formatted amount such as `"12.50 EUR"`.
///
/// `u64::MAX` has 20 digits; a decimal point, a space and the three-letter code make 25.
pub const AMOUNT_TEXT_CAPACITY: usize = 32;

/// Longest merchant name, in characters (printable ASCII, so also bytes): the protocol's
/// bound, so every merchant a valid request carries can be shown.
pub const MERCHANT_MAX_LEN: usize = crate::MAX_MERCHANT_LEN;

/// Longest credential label, in characters: the protocol's bound.
pub const CREDENTIAL_LABEL_MAX_LEN: usize = crate::MAX_LABEL_LEN;

/// Longest personal security word, in characters.
pub const SECURITY_WORD_MAX_LEN: usize = 16;

/// The statement returned by [`approval_text`].
pub type ApprovalText = String<APPROVAL_TEXT_CAPACITY>;

/// What the user is asked to approve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApprovalView<'a> {
    /// Who is paid, as the request named it.
    pub merchant: &'a str,
    /// The amount in minor units of `currency` (cents for EUR, yen for JPY).
    pub amount_minor: u64,
    /// The currency; its exponent says where the decimal point goes.
    pub currency: Currency,
    /// The user's own name for the credential that pays, e.g. `"Visa ending 4242"`.
    pub credential_label: &'a str,
}

/// A free-text field that the trusted display shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// [`ApprovalView::merchant`].
    Merchant,
    /// [`ApprovalView::credential_label`].
    CredentialLabel,
    /// The user's personal security word.
    SecurityWord,
}

impl Field {
    /// The most characters the field may hold.
    pub const fn max_len(self) -> usize {
        match self {
            Field::Merchant => MERCHANT_MAX_LEN,
            Field::CredentialLabel => CREDENTIAL_LABEL_MAX_LEN,
            Field::SecurityWord => SECURITY_WORD_MAX_LEN,
        }
    }

    /// A short lower-case name for messages.
    pub const fn name(self) -> &'static str {
        match self {
            Field::Merchant => "merchant",
            Field::CredentialLabel => "credential label",
            Field::SecurityWord => "security word",
        }
    }
}

/// Why text could not be put on the trusted display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextError {
    /// The field is empty.
    Empty(Field),
    /// The field is longer than [`Field::max_len`].
    TooLong {
        /// Which field.
        field: Field,
        /// Its limit in characters.
        max: usize,
    },
    /// The byte at `index` is not printable ASCII.
    NotPrintable {
        /// Which field.
        field: Field,
        /// Byte offset of the first offending byte.
        index: usize,
    },
    /// The field starts or ends with a space, which the user could not see.
    SurroundingSpace(Field),
    /// The text did not fit its buffer. Cannot happen with validated fields; reported
    /// rather than truncated.
    Capacity,
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::Empty(field) => write!(f, "{} is empty", field.name()),
            TextError::TooLong { field, max } => {
                write!(f, "{} is longer than {max} characters", field.name())
            }
            TextError::NotPrintable { field, index } => {
                write!(f, "{} has a non-printable byte at {index}", field.name())
            }
            TextError::SurroundingSpace(field) => {
                write!(f, "{} starts or ends with a space", field.name())
            }
            TextError::Capacity => f.write_str("text does not fit its buffer"),
        }
    }
}

impl core::error::Error for TextError {}

/// Checks that `text` may be shown as `field`: non-empty, printable ASCII, no leading or
/// trailing space, at most [`Field::max_len`] characters.
pub fn check_field(field: Field, text: &str) -> Result<(), TextError> {
    if text.is_empty() {
        return Err(TextError::Empty(field));
    }
    if let Some(index) = text.bytes().position(|b| !(b' '..=b'~').contains(&b)) {
        return Err(TextError::NotPrintable { field, index });
    }
    if text.len() > field.max_len() {
        return Err(TextError::TooLong {
            field,
            max: field.max_len(),
        });
    }
    if text.starts_with(' ') || text.ends_with(' ') {
        return Err(TextError::SurroundingSpace(field));
    }
    Ok(())
}

/// Formats `amount_minor` of `currency` for a person: `"12.50 EUR"`, `"1250 JPY"`,
/// `"0.001 KWD"`. Integer arithmetic only.
pub fn format_amount(
    amount_minor: u64,
    currency: Currency,
) -> Result<String<AMOUNT_TEXT_CAPACITY>, TextError> {
    // Decimal digits of the amount, least significant first.
    let mut digits = [b'0'; 20];
    let mut count = 0usize;
    let mut rest = amount_minor;
    loop {
        let slot = digits.get_mut(count).ok_or(TextError::Capacity)?;
        *slot = b'0' + (rest % 10) as u8;
        count += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let exponent = usize::from(currency.exponent());
    // At least one digit before the point: 1 minor unit of EUR is "0.01".
    let width = count.max(exponent.saturating_add(1));

    let mut out = String::new();
    for position in (0..width).rev() {
        // Positions past the amount's own digits are leading zeros.
        let digit = digits.get(position).copied().unwrap_or(b'0');
        push(&mut out, char::from(digit))?;
        if position == exponent && exponent > 0 {
            push(&mut out, '.')?;
        }
    }
    push(&mut out, ' ')?;
    out.push_str(currency.code())
        .map_err(|_| TextError::Capacity)?;
    Ok(out)
}

/// Returns the canonical statement for `view`: the text the approval screen displays and
/// the payment app signs. The security word is deliberately not part of it.
pub fn approval_text(view: &ApprovalView<'_>) -> Result<ApprovalText, TextError> {
    check_field(Field::Merchant, view.merchant)?;
    check_field(Field::CredentialLabel, view.credential_label)?;
    let amount = format_amount(view.amount_minor, view.currency)?;
    let mut out = ApprovalText::new();
    write!(
        out,
        "Pay\n{amount}\nto {}\nwith {}",
        view.merchant, view.credential_label
    )
    .map_err(|_| TextError::Capacity)?;
    Ok(out)
}

fn push<const N: usize>(out: &mut String<N>, c: char) -> Result<(), TextError> {
    out.push(c).map_err(|_| TextError::Capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(code: &str) -> Currency {
        Currency::from_code(code).expect("currency in table")
    }

    fn amount(minor: u64, code: &str) -> std::string::String {
        format_amount(minor, cur(code))
            .expect("formats")
            .as_str()
            .into()
    }

    #[test]
    fn amounts_use_the_currency_exponent() {
        assert_eq!(amount(1250, "EUR"), "12.50 EUR");
        assert_eq!(amount(1250, "JPY"), "1250 JPY");
        assert_eq!(amount(1, "KWD"), "0.001 KWD");
        assert_eq!(amount(0, "EUR"), "0.00 EUR");
        assert_eq!(amount(0, "JPY"), "0 JPY");
        assert_eq!(amount(5, "EUR"), "0.05 EUR");
        assert_eq!(amount(100, "USD"), "1.00 USD");
        assert_eq!(amount(123_456_789, "BHD"), "123456.789 BHD");
    }

    #[test]
    fn the_largest_amount_formats_in_every_currency() {
        assert_eq!(amount(u64::MAX, "EUR"), "184467440737095516.15 EUR");
        assert_eq!(amount(u64::MAX, "JPY"), "18446744073709551615 JPY");
        assert_eq!(amount(u64::MAX, "KWD"), "18446744073709551.615 KWD");
        for c in Currency::all() {
            assert!(format_amount(u64::MAX, c).is_ok(), "{c:?}");
        }
    }

    #[test]
    fn statement_is_the_documented_lines() {
        let view = ApprovalView {
            merchant: "Corner Cafe",
            amount_minor: 1250,
            currency: cur("EUR"),
            credential_label: "Visa ending 4242",
        };
        let text = approval_text(&view).expect("valid view");
        assert_eq!(
            text.as_str(),
            "Pay\n12.50 EUR\nto Corner Cafe\nwith Visa ending 4242"
        );
        // Deterministic.
        assert_eq!(approval_text(&view), Ok(text));
    }

    #[test]
    fn longest_statement_fits() {
        let merchant = "M".repeat(MERCHANT_MAX_LEN);
        let label = "L".repeat(CREDENTIAL_LABEL_MAX_LEN);
        let view = ApprovalView {
            merchant: &merchant,
            amount_minor: u64::MAX,
            currency: cur("KWD"),
            credential_label: &label,
        };
        assert!(approval_text(&view).is_ok());
    }

    #[test]
    fn field_rule_matches_the_protocol() {
        for text in [
            "",
            "a",
            " a",
            "a ",
            "a b",
            "~",
            "\u{7f}",
            "\t",
            "caf\u{e9}",
            "!@#$%^&*()",
            "x\n",
        ] {
            assert_eq!(
                check_field(Field::Merchant, text).is_ok(),
                crate::is_display_text(text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn bad_merchant_and_label_are_named() {
        let ok = ApprovalView {
            merchant: "Shop",
            amount_minor: 1,
            currency: cur("EUR"),
            credential_label: "Card",
        };
        let long = "x".repeat(MERCHANT_MAX_LEN + 1);
        let cases: &[(&str, TextError)] = &[
            ("", TextError::Empty(Field::Merchant)),
            (
                &long,
                TextError::TooLong {
                    field: Field::Merchant,
                    max: MERCHANT_MAX_LEN,
                },
            ),
            (
                "Shop\nPay 0.01 EUR",
                TextError::NotPrintable {
                    field: Field::Merchant,
                    index: 4,
                },
            ),
            (
                "Caf\u{e9}",
                TextError::NotPrintable {
                    field: Field::Merchant,
                    index: 3,
                },
            ),
            (
                "\u{202e}evil",
                TextError::NotPrintable {
                    field: Field::Merchant,
                    index: 0,
                },
            ),
            (
                "a\u{7f}",
                TextError::NotPrintable {
                    field: Field::Merchant,
                    index: 1,
                },
            ),
            (" Shop", TextError::SurroundingSpace(Field::Merchant)),
            ("Shop ", TextError::SurroundingSpace(Field::Merchant)),
        ];
        for (merchant, want) in cases {
            let view = ApprovalView { merchant, ..ok };
            assert_eq!(approval_text(&view), Err(*want), "{merchant:?}");
        }
        let view = ApprovalView {
            credential_label: "tab\there",
            ..ok
        };
        assert_eq!(
            approval_text(&view),
            Err(TextError::NotPrintable {
                field: Field::CredentialLabel,
                index: 3
            })
        );
        let label = "y".repeat(CREDENTIAL_LABEL_MAX_LEN + 1);
        let view = ApprovalView {
            credential_label: &label,
            ..ok
        };
        assert!(matches!(
            approval_text(&view),
            Err(TextError::TooLong {
                field: Field::CredentialLabel,
                ..
            })
        ));
    }
}
