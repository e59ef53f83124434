//! Front-end tests (filled below).
