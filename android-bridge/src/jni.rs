//! JNI (to do).
