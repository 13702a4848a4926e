//! The vector crate's integration tests, one binary (faster to link on small machines):
//! recall against brute force computed here ([`recall`]), the API's behaviour and errors
//! ([`api`]), restarts, torn logs and background maintenance ([`persistence`]).

mod api;
mod common;
mod persistence;
mod recall;
