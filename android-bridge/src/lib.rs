//! Placeholder: filled in by the android-bridge issue.
