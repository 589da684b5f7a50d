//! Checks shared by the artifact, service and environment models.

/// Why a name cannot be used as one component of a repository path.
///
/// Service names, environment names, namespaces and artifact ids all end up as directory or file
/// names in the GitOps repository (`<env>/releases/<namespace>/<service>/artifact.json`), so a name
/// that could climb out of its directory or hide itself must be refused before it is used.
pub(crate) fn path_component_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("is empty".to_owned());
    }
    if value.len() > 253 {
        return Some(format!(
            "is {} bytes long, at most 253 are allowed",
            value.len()
        ));
    }
    if value == "." || value == ".." {
        return Some(format!(
            "'{value}' would name a directory outside the service's own"
        ));
    }
    if value.starts_with('.') {
        return Some(format!("'{value}' starts with '.', which hides it"));
    }
    if value.starts_with('-') {
        return Some(format!(
            "'{value}' starts with '-', which tools read as an option"
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')))
    {
        return Some(format!(
            "'{value}' contains {bad:?}; only ASCII letters, digits, '.', '_', '-' and '+' are allowed"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::path_component_problem;

    #[test]
    fn accepts_release_manager_artifact_ids_and_service_names() {
        for ok in [
            "master-0017d995e3-67e9d69164",
            "example",
            "feature_new-thing",
            "v1.2.3+build",
        ] {
            assert_eq!(path_component_problem(ok), None, "{ok}");
        }
    }

    #[test]
    fn refuses_names_that_escape_or_hide() {
        for (bad, expected) in [
            ("", "is empty"),
            ("..", "outside"),
            (".git", "hides"),
            ("a/b", "'/'"),
            ("a\\b", "'\\\\'"),
            ("a b", "' '"),
            ("-rf", "option"),
        ] {
            let problem = path_component_problem(bad).unwrap_or_default();
            assert!(problem.contains(expected), "{bad:?}: {problem}");
        }
    }
}
