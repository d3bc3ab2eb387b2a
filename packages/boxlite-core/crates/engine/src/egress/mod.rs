//! Egress policy: where a box's traffic may go, enforced where passt opens and uses the real
//! sockets on the host.
//!
//! passt relays the guest's connections and datagrams through sockets of its own in the
//! host's network namespace, so a guest that targets one of the host's addresses (a second
//! interface, a bridge such as docker0, its IPv6 addresses) or a link-local service (cloud
//! metadata at 169.254.169.254) reaches it through passt. The engine therefore starts passt
//! under a seccomp filter of its own whose `connect`, `sendto` (with an address), `sendmsg` and
//! `sendmmsg` calls are handed to a supervisor thread ([`Supervisor`]) through a seccomp
//! user-notification descriptor. The supervisor reads the destination from passt's memory,
//! decides with [`Policy::check`] and lets the call continue or fails it with `EACCES`.
//!
//! Always refused: every address of every host interface (re-read at each decision, so new
//! interfaces are covered), their broadcast addresses, loopback, unspecified, link-local
//! (169.254/16, fe80::/10) and multicast destinations. With an allow-list
//! (`NetworkSpec.allow_net`), only the listed addresses, networks and host names are reachable,
//! and DNS queries to the box's name servers are let through only for listed names.
//!
//! The decision is sound because passt cannot change the address between the check and the
//! call: it runs one thread, and the filter refuses `clone` with `CLONE_VM` (threads, vfork),
//! `clone3` and `io_uring_setup` (which could connect without a system call the filter sees).
//! When the supervisor's process dies the descriptor closes and every further call of this kind
//! fails in passt (`ENOSYS`): a box whose supervisor died has no more egress, rather than an
//! unchecked one. Kept boxes are supervised by a process of their own ([`detached`]).
//!
//! [`policy`] decides (what a box may reach), [`filter`] is the seccomp program passt runs under
//! and the hand-over of its listener, [`supervisor`] answers passt's trapped calls, and
//! [`detached`] runs it in a process of its own for kept boxes, which outlive their starter.

pub mod detached;
mod filter;
mod policy;
mod supervisor;

pub use filter::{filter, install_in_child, take_listener, HandOver};
pub use policy::{host_addresses, AllowRule, Policy, Refusal};
pub use supervisor::Supervisor;
