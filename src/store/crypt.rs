//! age encryption of stored archives: X25519 recipients from the
//! `backup_encryption_recipients` option, identities from the operator at
//! restore time. Nothing here is ever logged.

use std::str::FromStr;

use age::x25519;

/// The recipients, each an age X25519 public key (`age1…`); a value that
/// is not one is refused, never skipped: an archive must not go out less
/// protected than the operator asked.
pub fn recipients(values: &[String]) -> Result<Vec<x25519::Recipient>, String> {
    // The value itself is never repeated: it may be a pasted secret key.
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            x25519::Recipient::from_str(v).map_err(|_| {
                format!(
                    "value {} of {} in backup_encryption_recipients is not an age X25519 recipient (age1...)",
                    i + 1,
                    values.len()
                )
            })
        })
        .collect()
}

/// Splits the option's text: recipients separated by spaces, commas or
/// newlines; `#` starts a comment.
pub fn split_recipients(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .flat_map(|l| l.split([' ', ',', '\t']))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The identities in an age identity file's text (`AGE-SECRET-KEY-1…`
/// lines; comments and blank lines skipped).
pub fn identities(text: &str) -> Result<Vec<x25519::Identity>, String> {
    let found: Vec<x25519::Identity> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            x25519::Identity::from_str(l)
                .map_err(|_| "the identity holds a line that is not an age X25519 identity (AGE-SECRET-KEY-1...)".to_string())
        })
        .collect::<Result<_, _>>()?;
    if found.is_empty() {
        return Err("the identity holds no age identity (AGE-SECRET-KEY-1...)".into());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    #[test]
    fn recipients_and_identities_parse_or_are_refused() {
        let id = x25519::Identity::generate();
        let public = id.to_public().to_string();
        let text = format!("# two\n{public}, {public}\n");
        let split = split_recipients(&text);
        assert_eq!(split.len(), 2);
        assert_eq!(recipients(&split).expect("valid").len(), 2);
        let e = recipients(&["ssh-ed25519 AAAA".into()]).expect_err("refused");
        assert!(e.contains("not an age X25519 recipient"), "{e}");
        let secret = id.to_string();
        let file = format!(
            "# created: now\n# public key: {public}\n{}\n",
            secret.expose_secret()
        );
        assert_eq!(identities(&file).expect("identity").len(), 1);
        assert!(identities("# nothing\n").is_err());
        let e = identities("AGE-SECRET-KEY-1NOPE").err().expect("refused");
        assert!(!e.contains("NOPE"), "no secret material in errors: {e}");
    }
}
