//! Image specs (`NAME[=NEWNAME][:TAG][@DIGEST]`) and container image references.

use std::fmt;

/// The placeholder for "keep the current value" in NEWNAME, TAG or DIGEST.
pub const PRESERVE: &str = "*";

/// An image change in the syntax of `kustomize edit set image`: `NAME[=NEWNAME][:TAG][@DIGEST]`.
///
/// `name` selects what to change (a kustomize `images` entry, a container's image repository, a
/// Helm `repository`); the optional parts say what it becomes. A registry port is part of the
/// name: `registry.local:5000/team/app:1.0` is NAME `registry.local:5000/team/app`, TAG `1.0`.
///
/// As in kustomize, NEWNAME, TAG and DIGEST may be [`PRESERVE`] (`*`): the part keeps its
/// current value (`app=*:2` sets the tag and keeps the new name, `app:*@sha256:…` sets the
/// digest and keeps the tag). A `*` part that has no current value is left out.
///
/// The same type is the `images` entry of a deploy request (`{name, newName, newTag, digest}`,
/// kustomize's own spelling), so a request, the CLI and the engine never translate between
/// twins.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// The image repository to match.
    pub name: String,
    /// The repository it becomes.
    #[serde(
        rename = "newName",
        alias = "new_name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub new_name: Option<String>,
    /// The tag it becomes.
    #[serde(
        rename = "newTag",
        alias = "new_tag",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub new_tag: Option<String>,
    /// The digest it becomes (`sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A malformed image spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The spec is empty.
    #[error("image spec is empty")]
    Empty,
    /// The repository name is not a valid image name.
    #[error("invalid image name {name:?}: {reason}")]
    Name {
        /// The offending name.
        name: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// The tag is not a valid image tag.
    #[error(
        "invalid image tag {0:?}: a tag is 1 to 128 of [A-Za-z0-9_.-] and does not start with . or -"
    )]
    Tag(String),
    /// The digest is not `algorithm:hex`.
    #[error("invalid image digest {0:?}: expected algorithm:hex, e.g. sha256:<64 hex digits>")]
    Digest(String),
    /// The spec names nothing to change.
    #[error("image spec {0:?} changes nothing: give =NEWNAME, :TAG or @DIGEST")]
    NothingToChange(String),
    /// A tag or digest was given on the matched name rather than on the new name.
    #[error(
        "image spec {0:?}: a tag or digest goes after the new name (NAME=NEWNAME:TAG), not on NAME"
    )]
    TagOnMatchedName(String),
}

impl ImageSpec {
    /// Parses and validates `NAME[=NEWNAME][:TAG][@DIGEST]`.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(SpecError::Empty);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.to_owned())),
            None => (s, None),
        };
        let spec = match rest.split_once('=') {
            Some((name, new)) => {
                let (new_name, tag) = split_tag(new);
                if split_tag(name).1.is_some() {
                    return Err(SpecError::TagOnMatchedName(s.to_owned()));
                }
                ImageSpec {
                    name: name.to_owned(),
                    new_name: Some(new_name.to_owned()),
                    new_tag: tag.map(str::to_owned),
                    digest,
                }
            }
            None => {
                let (name, tag) = split_tag(rest);
                ImageSpec {
                    name: name.to_owned(),
                    new_name: None,
                    new_tag: tag.map(str::to_owned),
                    digest,
                }
            }
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every part; [`ImageSpec::parse`] calls it, callers that build the struct directly
    /// get it from [`crate::apply`].
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_name(&self.name)?;
        if let Some(new_name) = &self.new_name
            && new_name != PRESERVE
        {
            validate_name(new_name)?;
        }
        if let Some(tag) = &self.new_tag
            && tag != PRESERVE
            && !is_valid_tag(tag)
        {
            return Err(SpecError::Tag(tag.clone()));
        }
        if let Some(digest) = &self.digest
            && digest != PRESERVE
            && !is_valid_digest(digest)
        {
            return Err(SpecError::Digest(digest.clone()));
        }
        if self.new_name.is_none() && self.new_tag.is_none() && self.digest.is_none() {
            return Err(SpecError::NothingToChange(self.to_string()));
        }
        Ok(())
    }

    /// Whether a part is the [`PRESERVE`] placeholder.
    pub fn has_placeholder(&self) -> bool {
        [&self.new_name, &self.new_tag, &self.digest]
            .into_iter()
            .any(|p| p.as_deref() == Some(PRESERVE))
    }

    /// The spec with every `*` replaced by the current value of its part (left out when there is
    /// none).
    pub(crate) fn resolve(
        &self,
        new_name: Option<&str>,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> ImageSpec {
        let part = |given: &Option<String>, current: Option<&str>| match given.as_deref() {
            Some(PRESERVE) => current.map(str::to_owned),
            _ => given.clone(),
        };
        ImageSpec {
            name: self.name.clone(),
            new_name: part(&self.new_name, new_name),
            new_tag: part(&self.new_tag, tag),
            digest: part(&self.digest, digest),
        }
    }

    /// The repository the image ends up with.
    pub fn target_name(&self) -> &str {
        self.new_name.as_deref().unwrap_or(&self.name)
    }

    /// The image a container ends up running when it had `old` (a full reference), with the
    /// rules of kustomize's image transformer: a new tag drops the old digest, a new digest drops
    /// the old tag, a spec with only a new name keeps tag and digest.
    pub(crate) fn apply_to_reference(&self, old: &ImageRef<'_>) -> String {
        if self.has_placeholder() {
            return self
                .resolve(Some(old.repository), old.tag, old.digest)
                .apply_to_reference(old);
        }
        let mut out = self.target_name().to_owned();
        let (tag, digest) = match (&self.new_tag, &self.digest) {
            (None, None) => (old.tag, old.digest),
            (tag, digest) => (tag.as_deref(), digest.as_deref()),
        };
        if let Some(tag) = tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = digest {
            out.push('@');
            out.push_str(digest);
        }
        out
    }

    /// What the spec renders to, as a human reads it: `registry/app:1.2.3`.
    pub(crate) fn rendered_target(&self) -> String {
        let mut out = self.target_name().to_owned();
        if let Some(tag) = &self.new_tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(digest);
        }
        out
    }
}

impl fmt::Display for ImageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(new_name) = &self.new_name {
            write!(f, "={new_name}")?;
        }
        if let Some(tag) = &self.new_tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageSpec::parse(s)
    }
}

/// Splits `repo[:tag]` where the tag is after the last `:` that follows the last `/`, so a
/// registry port (`registry.local:5000/app`) is never taken for a tag.
fn split_tag(s: &str) -> (&str, Option<&str>) {
    let last_slash = s.rfind('/').map_or(0, |i| i + 1);
    match s[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (&s[..at], Some(&s[at + 1..]))
        }
        None => (s, None),
    }
}

/// A container image reference split into repository, tag and digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ImageRef<'a> {
    pub repository: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

impl<'a> ImageRef<'a> {
    pub(crate) fn parse(s: &'a str) -> Self {
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (s, None),
        };
        let (repository, tag) = split_tag(rest);
        ImageRef {
            repository,
            tag,
            digest,
        }
    }
}

fn validate_name(name: &str) -> Result<(), SpecError> {
    let bad = |reason| SpecError::Name {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("the name is empty"));
    }
    if name.len() > 255 {
        return Err(bad("longer than 255 characters"));
    }
    let mut components = name.split('/').peekable();
    let mut first = true;
    while let Some(component) = components.next() {
        if component.is_empty() {
            return Err(bad("empty path component"));
        }
        let is_last = components.peek().is_none();
        // The first component of a multi-component name may be a registry host with a port and
        // upper-case letters; the repository path is lower-case.
        let host = first && !is_last;
        for c in component.chars() {
            let ok = c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, '.' | '_' | '-')
                || (host && (c.is_ascii_uppercase() || c == ':'));
            if !ok {
                return Err(bad(
                    "only lower-case letters, digits, '.', '_', '-' and '/' are allowed (a registry host may also have a :port)",
                ));
            }
        }
        let edge = |c: char| matches!(c, '.' | '_' | '-');
        if !host && (component.starts_with(edge) || component.ends_with(edge)) {
            return Err(bad("a path component starts or ends with a separator"));
        }
        first = false;
    }
    Ok(())
}

pub(crate) fn is_valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    tag.len() <= 128
        && (first.is_ascii_alphanumeric() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn is_valid_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let algorithm_ok = algorithm.split(['+', '.', '_', '-']).all(|part| {
        part.starts_with(|c: char| c.is_ascii_lowercase())
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    });
    algorithm_ok && hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn spec(
        name: &str,
        new_name: Option<&str>,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> ImageSpec {
        ImageSpec {
            name: name.into(),
            new_name: new_name.map(Into::into),
            new_tag: tag.map(Into::into),
            digest: digest.map(Into::into),
        }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(
            ImageSpec::parse("app:1.2.3").unwrap(),
            spec("app", None, Some("1.2.3"), None)
        );
        assert_eq!(
            ImageSpec::parse("app=reg.example.com/team/app:2").unwrap(),
            spec("app", Some("reg.example.com/team/app"), Some("2"), None)
        );
        assert_eq!(
            ImageSpec::parse("app=other").unwrap(),
            spec("app", Some("other"), None, None)
        );
        assert_eq!(
            ImageSpec::parse(&format!("app@{DIGEST}")).unwrap(),
            spec("app", None, None, Some(DIGEST))
        );
        assert_eq!(
            ImageSpec::parse(&format!("app=b:1@{DIGEST}")).unwrap(),
            spec("app", Some("b"), Some("1"), Some(DIGEST))
        );
    }

    #[test]
    fn placeholders_parse_as_kustomize_spells_them() {
        assert_eq!(
            ImageSpec::parse("app=*:1.2").unwrap(),
            spec("app", Some("*"), Some("1.2"), None)
        );
        assert_eq!(
            ImageSpec::parse("app:*").unwrap(),
            spec("app", None, Some("*"), None)
        );
        assert_eq!(
            ImageSpec::parse("app=reg/app:*").unwrap(),
            spec("app", Some("reg/app"), Some("*"), None)
        );
        assert_eq!(
            ImageSpec::parse("app@*").unwrap(),
            spec("app", None, None, Some("*"))
        );
        assert_eq!(
            ImageSpec::parse("app=*").unwrap(),
            spec("app", Some("*"), None, None)
        );
        assert_eq!(
            ImageSpec::parse(&format!("app=*:*@{DIGEST}")).unwrap(),
            spec("app", Some("*"), Some("*"), Some(DIGEST))
        );
        assert!(matches!(
            ImageSpec::parse("*:1"),
            Err(SpecError::Name { .. })
        ));
        assert!(matches!(ImageSpec::parse("app:**"), Err(SpecError::Tag(_))));
        for s in ["app=*:1.2", "app:*", "app@*", "app=*"] {
            assert_eq!(ImageSpec::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn placeholders_keep_the_current_parts() {
        let with_digest = format!("app:1@{DIGEST}");
        let old = ImageRef::parse(&with_digest);
        let apply = |s: &str| ImageSpec::parse(s).unwrap().apply_to_reference(&old);
        assert_eq!(apply("app=*:2"), "app:2");
        assert_eq!(apply("app=b:*"), "b:1");
        assert_eq!(apply("app=b:*@*"), format!("b:1@{DIGEST}"));
        assert_eq!(apply("app:*"), "app:1");
        assert_eq!(apply("app@*"), format!("app@{DIGEST}"));
        assert_eq!(apply("app=*"), format!("app:1@{DIGEST}"));
    }

    #[test]
    fn registry_port_is_not_a_tag() {
        assert_eq!(
            ImageSpec::parse("registry.local:5000/team/app:1.0").unwrap(),
            spec("registry.local:5000/team/app", None, Some("1.0"), None)
        );
        assert_eq!(
            ImageSpec::parse("registry.local:5000/app=registry.local:5000/app2").unwrap(),
            spec(
                "registry.local:5000/app",
                Some("registry.local:5000/app2"),
                None,
                None
            )
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "app:1",
            "a=b",
            "reg:5000/a=reg:5000/b:v1",
            &format!("a:1@{DIGEST}"),
        ] {
            assert_eq!(ImageSpec::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_malformed_specs() {
        assert_eq!(ImageSpec::parse(""), Err(SpecError::Empty));
        assert!(matches!(
            ImageSpec::parse("app"),
            Err(SpecError::NothingToChange(_))
        ));
        assert!(matches!(
            ImageSpec::parse("App:1"),
            Err(SpecError::Name { .. })
        ));
        assert!(matches!(
            ImageSpec::parse("a b:1"),
            Err(SpecError::Name { .. })
        ));
        assert!(matches!(ImageSpec::parse("app:"), Err(SpecError::Tag(_))));
        assert!(matches!(ImageSpec::parse("app:-x"), Err(SpecError::Tag(_))));
        assert!(matches!(
            ImageSpec::parse("app@sha256:xyz"),
            Err(SpecError::Digest(_))
        ));
        assert!(matches!(
            ImageSpec::parse("app@nodigest"),
            Err(SpecError::Digest(_))
        ));
        assert!(matches!(
            ImageSpec::parse("app:1=b:2"),
            Err(SpecError::TagOnMatchedName(_))
        ));
        assert!(matches!(
            ImageSpec::parse("/app:1"),
            Err(SpecError::Name { .. })
        ));
        assert!(matches!(
            ImageSpec::parse("app=:1"),
            Err(SpecError::Name { .. })
        ));
    }

    #[test]
    fn image_references_split_like_docker() {
        let r = ImageRef::parse("registry.local:5000/team/app:1.0");
        assert_eq!(
            (r.repository, r.tag, r.digest),
            ("registry.local:5000/team/app", Some("1.0"), None)
        );
        let r = ImageRef::parse("registry.local:5000/team/app");
        assert_eq!(
            (r.repository, r.tag),
            ("registry.local:5000/team/app", None)
        );
        let with_digest = format!("nginx:1.25@{DIGEST}");
        let r = ImageRef::parse(&with_digest);
        assert_eq!(
            (r.repository, r.tag, r.digest),
            ("nginx", Some("1.25"), Some(DIGEST))
        );
    }

    #[test]
    fn new_tag_drops_old_digest_and_new_digest_drops_old_tag() {
        let with_digest = format!("app:1@{DIGEST}");
        let old = ImageRef::parse(&with_digest);
        assert_eq!(
            ImageSpec::parse("app:2").unwrap().apply_to_reference(&old),
            "app:2"
        );
        let new_digest = DIGEST.replace('0', "f");
        assert_eq!(
            ImageSpec::parse(&format!("app@{new_digest}"))
                .unwrap()
                .apply_to_reference(&old),
            format!("app@{new_digest}")
        );
        assert_eq!(
            ImageSpec::parse("app=b").unwrap().apply_to_reference(&old),
            format!("b:1@{DIGEST}")
        );
    }
}
