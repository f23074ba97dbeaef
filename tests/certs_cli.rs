//! `qmgr certs init` as an operator uses it.
