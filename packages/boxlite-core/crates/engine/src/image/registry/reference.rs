//! Image references, normalised as Docker does (`python:slim` is
//! `docker.io/library/python:slim`), with a clear error for malformed ones.

use oci_client::Reference;

use super::error::ReferenceProblem;
use super::PullError;

/// Parses a reference the way Docker does; a clear error for malformed ones.
pub fn parse_reference(reference: &str) -> Result<Reference, PullError> {
    let trimmed = reference.trim();
    if trimmed.is_empty() {
        return Err(PullError::EmptyReference);
    }
    let invalid = |why: ReferenceProblem| PullError::InvalidReference {
        reference: reference.to_owned(),
        why,
    };
    let parsed = trimmed
        .parse::<Reference>()
        .map_err(|e| invalid(e.into()))?;
    // As Docker: repository names are lowercase.
    if parsed
        .repository()
        .bytes()
        .any(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)))
    {
        return Err(invalid(ReferenceProblem::Uppercase));
    }
    Ok(parsed)
}

/// The canonical text of a reference: `docker.io/library/alpine:latest`, `…@sha256:…`.
pub fn canonical(reference: &Reference) -> String {
    match (reference.tag(), reference.digest()) {
        (None, None) => format!("{}:latest", reference.whole()),
        _ => reference.whole(),
    }
}
