//! The payment app: credentials, the approval state machine, policy and tokens.

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::Generate;
use protocol::device_key::{SecurityWord, security_word};
use protocol::eat::BootState;
use protocol::session::sec1;
use protocol::signed::{ApprovalText, ApprovalView, approval_text};
use protocol::signed::{AuthorizationClaims, enrollment_statement};
use protocol::{
    Attestation, CredentialId, CredentialInfo, Currency, DeviceStatus, EnrollmentRecord, ErrorCode,
    Field, FixedBytes, Label, Limit, MAX_CREDENTIALS, Nonce, PROTOCOL_VERSION, PaymentRequest,
    PublicKeyBytes, Reply, Request, Response, Token, is_display_text,
};
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroize as _;

use crate::cose::{Attester, sign_token};
use crate::storage::{MAX_STATE_LEN, PersistentState, PinRecord, Storage, StoredCredential};

/// Wrong PINs in a row that lock payments for good.
pub const MAX_PIN_FAILURES: u8 = 3;
/// Shortest and longest PIN, in decimal digits.
pub const PIN_DIGITS: core::ops::RangeInclusive<usize> = 4..=12;
/// Length of the daily-limit window.
pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Limits and timeouts. Amounts are minor units of the transaction's own
/// currency; daily totals are kept per currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub per_transaction_minor: u64,
    pub daily_minor: u64,
    pub approval_timeout_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            per_transaction_minor: 50_000,
            daily_minor: 100_000,
            approval_timeout_ms: 60_000,
        }
    }
}

/// What the trusted UI must show for the pending approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalPrompt {
    /// The exact statement to display; its SHA-256 is what gets signed.
    pub text: ApprovalText,
    /// Whether the UI must collect a PIN before approving.
    pub pin_required: bool,
    /// Monotonic time after which the approval times out.
    pub deadline_ms: u64,
}

/// What [`PaymentApp::handle`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "no_std: one value per request, never stored"
)]
pub enum Handled {
    /// Send this back to the rich VM.
    Reply(Response),
    /// A payment awaits the user: drive the trusted UI, then call
    /// [`PaymentApp::approve`], [`PaymentApp::decline`] or [`PaymentApp::poll`].
    Prompt(ApprovalPrompt),
    /// The trusted path's setup awaits the user: show these words, let the
    /// user choose one and a PIN, then call [`PaymentApp::finish_setup`] or
    /// [`PaymentApp::cancel_setup`].
    Setup(SetupWords),
}

/// The security words a setup offers (distinct, from fresh randomness).
pub type SetupWords = [SecurityWord; SETUP_WORDS];
/// How many words a setup offers.
pub const SETUP_WORDS: usize = 3;

/// Why [`PaymentApp::approve`] did not produce a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApproveError {
    /// No approval is pending.
    NothingPending,
    /// The PIN was wrong; the approval is still pending.
    WrongPin { remaining: u8 },
    /// The approval is over; send `Err(code)` to the rich VM.
    Finished(ErrorCode),
}

/// The approval in flight.
///
/// # Invariants
/// `request` passed validation and its credential existed when it began.
struct Pending {
    request: PaymentRequest,
    currency: Currency,
    text: ApprovalText,
    deadline_ms: u64,
}

/// The payment trusted application.
///
/// # Invariants
/// `state` equals what was last written to `storage`; at most one approval
/// is pending; `attester`, once made, is certified by `device_key`.
pub struct PaymentApp<S: Storage> {
    device_key: SigningKey,
    storage: S,
    policy: Policy,
    state: PersistentState,
    pending: Option<Pending>,
    /// The words of a setup in progress.
    pending_setup: Option<SetupWords>,
    boot: BootState,
    attester: Option<Attester>,
}

impl<S: Storage> PaymentApp<S> {
    /// Restores the app from `storage` (or starts empty). Fails when the
    /// stored state cannot be read.
    pub fn new(device_key: SigningKey, mut storage: S, policy: Policy) -> Result<Self, ErrorCode> {
        let mut buf = [0u8; MAX_STATE_LEN];
        let state = match storage.load(&mut buf) {
            Ok(None) => PersistentState::default(),
            Ok(Some(len)) => buf
                .get(..len)
                .and_then(PersistentState::decode)
                .ok_or(ErrorCode::StorageFailure)?,
            Err(_) => return Err(ErrorCode::StorageFailure),
        };
        Ok(PaymentApp {
            device_key,
            storage,
            policy,
            state,
            pending: None,
            pending_setup: None,
            boot: BootState::Unmeasured,
            attester: None,
        })
    }

    /// Records what the loader measured at boot; attestations report it.
    /// Without this call the app attests [`BootState::Unmeasured`], which
    /// verifiers refuse.
    pub fn set_boot_state(&mut self, boot: BootState) {
        self.boot = boot;
    }

    /// What attestations report about the boot.
    pub fn boot_state(&self) -> &BootState {
        &self.boot
    }

    /// Answers a decoded request (already taken out of its session record).
    pub fn handle<R: CryptoRng + ?Sized>(
        &mut self,
        request: &Request,
        rng: &mut R,
        now_ms: u64,
    ) -> Handled {
        let reply = match request {
            Request::OpenSession(_) | Request::Sealed(_) => Err(ErrorCode::InvalidRequest {
                field: Field::Encoding,
            }),
            Request::Enroll { label } => self.enroll(label, rng).map(Reply::Enrolled),
            Request::ListCredentials => Ok(Reply::Credentials(self.credentials())),
            Request::DeleteCredential { credential } => {
                self.delete(credential).map(|()| Reply::Deleted)
            }
            Request::RequestPayment(payment) => {
                return match self.begin_payment(payment, now_ms) {
                    Ok(prompt) => Handled::Prompt(prompt),
                    Err(code) => Handled::Reply(Err(code)),
                };
            }
            Request::Attest { nonce } => self.attest(nonce, rng).map(Reply::Attestation),
            Request::Status => Ok(Reply::Status(self.status())),
            Request::Setup => {
                return match self.begin_setup(rng) {
                    Ok(words) => Handled::Setup(words),
                    Err(code) => Handled::Reply(Err(code)),
                };
            }
        };
        Handled::Reply(reply)
    }

    /// The device public key (uncompressed SEC1) that clients and issuers trust.
    pub fn device_public_key(&self) -> PublicKeyBytes {
        FixedBytes(sec1(&(*self.device_key.verifying_key()).into()))
    }

    /// Creates a credential; its private key never leaves the app.
    pub fn enroll<R: CryptoRng + ?Sized>(
        &mut self,
        label: &Label,
        rng: &mut R,
    ) -> Result<EnrollmentRecord, ErrorCode> {
        if !is_display_text(label) {
            return Err(ErrorCode::InvalidRequest {
                field: Field::Label,
            });
        }
        let key = SigningKey::generate_from_rng(rng);
        let mut id: CredentialId = Default::default();
        rng.fill_bytes(&mut id);
        let public_key = FixedBytes(sec1(&(*key.verifying_key()).into()));
        let statement = enrollment_statement(&id, label, &public_key).ok_or(ErrorCode::Internal)?;
        let signature: Signature = self.device_key.sign(&statement);

        let mut next = self.state.clone();
        let stored = StoredCredential {
            id,
            label: label.clone(),
            secret: key.to_bytes().into(),
        };
        next.credentials
            .push(stored)
            .map_err(|_| ErrorCode::StorageFull)?;
        self.commit(next)?;
        Ok(EnrollmentRecord {
            credential: id,
            label: label.clone(),
            public_key,
            signature: FixedBytes(signature.to_bytes().into()),
        })
    }

    /// Every enrolled credential with its public key.
    pub fn credentials(&self) -> heapless::Vec<CredentialInfo, MAX_CREDENTIALS> {
        self.state
            .credentials
            .iter()
            .filter_map(|c| {
                let key = SigningKey::from_slice(&c.secret).ok()?;
                Some(CredentialInfo {
                    credential: c.id,
                    label: c.label.clone(),
                    public_key: FixedBytes(sec1(&(*key.verifying_key()).into())),
                })
            })
            .collect()
    }

    /// Deletes a credential and its private key.
    pub fn delete(&mut self, credential: &CredentialId) -> Result<(), ErrorCode> {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| &p.request.credential == credential)
        {
            return Err(ErrorCode::Busy);
        }
        let mut next = self.state.clone();
        let before = next.credentials.len();
        next.credentials.retain(|c| &c.id != credential);
        if next.credentials.len() == before {
            return Err(ErrorCode::UnknownCredential);
        }
        self.commit(next)
    }

    /// The attestation evidence (EAT) for the verifier's nonce. The first
    /// call of a boot generates the attestation key (from `rng`) and has the
    /// device key certify it; it lives until the app is dropped.
    pub fn attest<R: CryptoRng + ?Sized>(
        &mut self,
        nonce: &Nonce,
        rng: &mut R,
    ) -> Result<Attestation, ErrorCode> {
        if self.attester.is_none() {
            let key = SigningKey::generate_from_rng(rng);
            self.attester = Some(Attester::new(&self.device_key, key).ok_or(ErrorCode::Internal)?);
        }
        self.attester
            .as_ref()
            .and_then(|attester| attester.attest(nonce, &self.boot))
            .ok_or(ErrorCode::Internal)
    }

    /// What the rich VM may know about the app.
    pub fn status(&self) -> DeviceStatus {
        DeviceStatus {
            protocol_version: PROTOCOL_VERSION,
            credentials: u8::try_from(self.state.credentials.len()).unwrap_or(u8::MAX),
            pin_set: self.state.pin.is_some(),
            locked: self.locked(),
            busy: self.pending.is_some(),
            transaction_counter: self.state.counter,
        }
    }

    /// Sets (or replaces) the PIN. Only the trusted UI may call this: the PIN
    /// never comes from the rich VM. Clears the failure count.
    pub fn set_pin<R: CryptoRng + ?Sized>(
        &mut self,
        pin: &str,
        rng: &mut R,
    ) -> Result<(), ErrorCode> {
        if self.locked() {
            return Err(ErrorCode::Locked);
        }
        if !PIN_DIGITS.contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ErrorCode::InvalidRequest {
                field: Field::Encoding,
            });
        }
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        let mut next = self.state.clone();
        next.pin = Some(PinRecord {
            salt,
            digest: pin_digest(&salt, pin),
        });
        next.pin_failures = 0;
        self.commit(next)
    }

    /// Validates a payment request and makes it the pending approval.
    pub fn begin_payment(
        &mut self,
        request: &PaymentRequest,
        now_ms: u64,
    ) -> Result<ApprovalPrompt, ErrorCode> {
        if self.pending.is_some() || self.pending_setup.is_some() {
            return Err(ErrorCode::Busy);
        }
        if self.locked() {
            return Err(ErrorCode::Locked);
        }
        let currency = request.validate()?;
        let credential = self
            .state
            .credential(&request.credential)
            .ok_or(ErrorCode::UnknownCredential)?;
        self.check_limits(request, now_ms)?;
        let view = ApprovalView {
            merchant: &request.merchant,
            amount_minor: request.amount_minor,
            currency,
            credential_label: &credential.label,
        };
        let text = approval_text(&view).map_err(|_| ErrorCode::InvalidRequest {
            field: Field::Merchant,
        })?;
        let deadline_ms = now_ms.saturating_add(self.policy.approval_timeout_ms);
        let prompt = ApprovalPrompt {
            text: text.clone(),
            pin_required: self.state.pin.is_some(),
            deadline_ms,
        };
        self.pending = Some(Pending {
            request: request.clone(),
            currency,
            text,
            deadline_ms,
        });
        Ok(prompt)
    }

    /// The user approved on the trusted UI (with `pin` when one is set):
    /// returns the authorization token.
    pub fn approve(&mut self, pin: Option<&str>, now_ms: u64) -> Result<Token, ApproveError> {
        let pending = self.pending.take().ok_or(ApproveError::NothingPending)?;
        if now_ms > pending.deadline_ms {
            return Err(ApproveError::Finished(ErrorCode::TimedOut));
        }
        let mut next = self.state.clone();
        if let Some(record) = &next.pin {
            let good = pin
                .is_some_and(|pin| bool::from(pin_digest(&record.salt, pin).ct_eq(&record.digest)));
            if !good {
                next.pin_failures = next.pin_failures.saturating_add(1).min(MAX_PIN_FAILURES);
                let remaining = MAX_PIN_FAILURES - next.pin_failures;
                self.commit(next).map_err(ApproveError::Finished)?;
                if remaining == 0 {
                    return Err(ApproveError::Finished(ErrorCode::Locked));
                }
                self.pending = Some(pending);
                return Err(ApproveError::WrongPin { remaining });
            }
            next.pin_failures = 0;
        }
        let finished = ApproveError::Finished;
        self.check_limits(&pending.request, now_ms)
            .map_err(finished)?;
        add_spending(&mut next, &pending.request, now_ms).map_err(finished)?;
        next.counter = next
            .counter
            .checked_add(1)
            .ok_or(finished(ErrorCode::Internal))?;
        let credential = next
            .credential(&pending.request.credential)
            .ok_or(finished(ErrorCode::UnknownCredential))?;
        let key = SigningKey::from_slice(&credential.secret)
            .map_err(|_| finished(ErrorCode::Internal))?;
        let claims = AuthorizationClaims {
            credential: pending.request.credential,
            amount_minor: pending.request.amount_minor,
            currency: pending.currency.into(),
            merchant: pending.request.merchant.clone(),
            displayed_text_sha256: Sha256::digest(pending.text.as_bytes()).into(),
            nonce: pending.request.nonce,
            counter: next.counter,
        };
        let token = sign_token(&key, &claims).ok_or(finished(ErrorCode::Internal))?;
        // Persist the counter before the token leaves the app.
        self.commit(next).map_err(finished)?;
        Ok(token)
    }

    /// Starts the trusted path's setup: three distinct security words for
    /// the user to choose from. Refused while an approval or another setup
    /// is pending, when locked, and once the path was set up.
    pub fn begin_setup<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
    ) -> Result<SetupWords, ErrorCode> {
        if self.pending.is_some() || self.pending_setup.is_some() {
            return Err(ErrorCode::Busy);
        }
        if self.locked() {
            return Err(ErrorCode::Locked);
        }
        if self.state.security_word.is_some() {
            return Err(ErrorCode::AlreadySetUp);
        }
        let mut words: SetupWords = Default::default();
        let mut chosen = 0;
        // 6,400 words: a repeat is rare; 64 draws make it impossible in
        // practice, and a short list is refused rather than padded.
        for _ in 0..64 {
            if chosen == SETUP_WORDS {
                break;
            }
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            let word = security_word(&seed);
            seed.zeroize();
            if !words[..chosen].contains(&word) {
                words[chosen] = word;
                chosen += 1;
            }
        }
        if chosen < SETUP_WORDS {
            return Err(ErrorCode::Internal);
        }
        self.pending_setup = Some(words.clone());
        Ok(words)
    }

    /// The user chose word `choice` (an index into the offered words) and
    /// a PIN on the trusted UI: both are stored, the PIN's failure count
    /// starts at zero. The setup ends either way.
    pub fn finish_setup<R: CryptoRng + ?Sized>(
        &mut self,
        choice: usize,
        pin: &str,
        rng: &mut R,
    ) -> Result<(), ErrorCode> {
        let words = self.pending_setup.take().ok_or(ErrorCode::Internal)?;
        let word = words
            .get(choice)
            .cloned()
            .ok_or(ErrorCode::InvalidRequest {
                field: Field::Encoding,
            })?;
        if !PIN_DIGITS.contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ErrorCode::InvalidRequest {
                field: Field::Encoding,
            });
        }
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        let mut next = self.state.clone();
        next.pin = Some(PinRecord {
            salt,
            digest: pin_digest(&salt, pin),
        });
        next.pin_failures = 0;
        next.security_word = Some(word);
        self.commit(next)
    }

    /// The user (or the app, by closing) cancelled the setup; true when one
    /// was in progress.
    pub fn cancel_setup(&mut self) -> bool {
        self.pending_setup.take().is_some()
    }

    /// Whether a setup waits for the user.
    pub fn setup_pending(&self) -> bool {
        self.pending_setup.is_some()
    }

    /// The security word the user chose, once the path is set up.
    pub fn security_word(&self) -> Option<&str> {
        self.state.security_word.as_ref().map(|w| w.as_str())
    }

    /// The user declined on the trusted UI.
    pub fn decline(&mut self) -> Result<ErrorCode, ApproveError> {
        self.pending.take().ok_or(ApproveError::NothingPending)?;
        Ok(ErrorCode::Declined)
    }

    /// Call periodically: ends a pending approval whose deadline passed.
    pub fn poll(&mut self, now_ms: u64) -> Option<ErrorCode> {
        let expired = self
            .pending
            .as_ref()
            .is_some_and(|p| now_ms > p.deadline_ms);
        if expired {
            self.pending = None;
            return Some(ErrorCode::TimedOut);
        }
        None
    }

    /// Whether too many wrong PINs locked payments.
    pub fn locked(&self) -> bool {
        self.state.pin_failures >= MAX_PIN_FAILURES
    }

    /// The storage backend (for inspection in tests and for the OS).
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Mutable access to the storage backend.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    fn check_limits(&self, request: &PaymentRequest, now_ms: u64) -> Result<(), ErrorCode> {
        if request.amount_minor > self.policy.per_transaction_minor {
            return Err(ErrorCode::LimitExceeded {
                limit: Limit::PerTransaction,
            });
        }
        let mut trial = self.state.clone();
        add_spending(&mut trial, request, now_ms)?;
        let total = trial
            .spending
            .totals
            .iter()
            .find(|(code, _)| *code == request.currency)
            .map_or(0, |(_, total)| *total);
        if total > self.policy.daily_minor {
            return Err(ErrorCode::LimitExceeded {
                limit: Limit::Daily,
            });
        }
        Ok(())
    }

    fn commit(&mut self, next: PersistentState) -> Result<(), ErrorCode> {
        let mut buf = [0u8; MAX_STATE_LEN];
        let blob = postcard::to_slice(&next, &mut buf).map_err(|_| ErrorCode::Internal)?;
        self.storage
            .store(blob)
            .map_err(|_| ErrorCode::StorageFailure)?;
        self.state = next;
        Ok(())
    }
}

/// Adds an approved amount to `state`'s spending, starting a new window when
/// the old one is over.
fn add_spending(
    state: &mut PersistentState,
    request: &PaymentRequest,
    now_ms: u64,
) -> Result<(), ErrorCode> {
    let spending = &mut state.spending;
    if now_ms.saturating_sub(spending.window_start_ms) >= DAY_MS
        || now_ms < spending.window_start_ms
    {
        spending.window_start_ms = now_ms;
        spending.totals.clear();
    }
    let limit = ErrorCode::LimitExceeded {
        limit: Limit::Daily,
    };
    match spending
        .totals
        .iter_mut()
        .find(|(code, _)| *code == request.currency)
    {
        Some((_, total)) => *total = total.checked_add(request.amount_minor).ok_or(limit)?,
        None => spending
            .totals
            .push((request.currency, request.amount_minor))
            .map_err(|_| limit)?,
    }
    Ok(())
}

fn pin_digest(salt: &[u8; 16], pin: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"mvmm pin v1")
        .chain_update(salt)
        .chain_update(pin.as_bytes())
        .finalize()
        .into()
}
