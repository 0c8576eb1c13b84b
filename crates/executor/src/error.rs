//! The error model of executor-api §3.

use serde_json::json;

/// Error types of executor-api §3.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    GeneralUnknown,
    GeneralUnauthorized,
    BuildFailed,
    RuntimeFailed,
    RuntimeTimeout,
    RuntimeNotFound,
    RuntimeConflict,
    ExecutionBadRequest,
    ExecutionBadJson,
    ExecutionTimeout,
    LogsTimeout,
    CommandTimeout,
    CommandFailed,
}

impl ErrorType {
    pub fn name(self) -> &'static str {
        match self {
            Self::GeneralUnknown => "general_unknown",
            Self::GeneralUnauthorized => "general_unauthorized",
            Self::BuildFailed => "build_failed",
            Self::RuntimeFailed => "runtime_failed",
            Self::RuntimeTimeout => "runtime_timeout",
            Self::RuntimeNotFound => "runtime_not_found",
            Self::RuntimeConflict => "runtime_conflict",
            Self::ExecutionBadRequest => "execution_bad_request",
            Self::ExecutionBadJson => "execution_bad_json",
            Self::ExecutionTimeout => "execution_timeout",
            Self::LogsTimeout => "logs_timeout",
            Self::CommandTimeout => "command_timeout",
            Self::CommandFailed => "command_failed",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Self::GeneralUnknown | Self::CommandTimeout | Self::CommandFailed => 500,
            Self::GeneralUnauthorized => 401,
            Self::RuntimeNotFound => 404,
            Self::RuntimeConflict => 409,
            Self::LogsTimeout => 504,
            _ => 400,
        }
    }

    pub fn default_message(self) -> &'static str {
        match self {
            Self::GeneralUnknown => "Internal server error.",
            Self::GeneralUnauthorized => "You are not authorized to access this resource.",
            Self::BuildFailed => "Build failed.",
            Self::RuntimeFailed => "Runtime failed.",
            Self::RuntimeTimeout => "Timed out waiting for runtime.",
            Self::RuntimeNotFound => "Runtime not found",
            Self::RuntimeConflict => "Runtime already exists ",
            Self::ExecutionBadRequest => "Execution request was invalid.",
            Self::ExecutionBadJson => "Execution resulted in binary response, but JSON response does not allow binaries. Use \"Accept: multipart/form-data\" header to support binaries.",
            Self::ExecutionTimeout => "Timed out waiting for execution.",
            Self::LogsTimeout => "Timed out waiting for logs.",
            Self::CommandTimeout => "Operation timed out.",
            Self::CommandFailed => "Failed to execute command.",
        }
    }
}

/// An API error: typed, or untyped (`general_unknown`) with its own status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub kind: ErrorType,
    pub code: u16,
    pub message: String,
    /// Where it was raised, for development mode (executor-api §3.1).
    pub location: &'static std::panic::Location<'static>,
}

impl ApiError {
    #[track_caller]
    pub fn typed(kind: ErrorType) -> Self {
        Self {
            kind,
            code: kind.status(),
            message: kind.default_message().to_string(),
            location: std::panic::Location::caller(),
        }
    }

    #[track_caller]
    pub fn with_message(kind: ErrorType, message: impl Into<String>) -> Self {
        Self {
            kind,
            code: kind.status(),
            message: message.into(),
            location: std::panic::Location::caller(),
        }
    }

    /// Untyped: `general_unknown` with an explicit status (executor-api §3.3).
    #[track_caller]
    pub fn untyped(code: u16, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::GeneralUnknown,
            code,
            message: message.into(),
            location: std::panic::Location::caller(),
        }
    }

    pub fn body(&self, version: &str, development: bool) -> serde_json::Value {
        let mut body = json!({
            "type": self.kind.name(),
            "message": self.message,
            "code": self.code,
            "version": version,
        });
        if development {
            body["file"] = json!(self.location.file());
            body["line"] = json!(self.location.line());
            body["trace"] = json!([format!("{}:{}", self.location.file(), self.location.line())]);
        }
        body
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.kind.name(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_type_message_code_version_and_dev_details() {
        let e = ApiError::typed(ErrorType::RuntimeNotFound);
        let b = e.body("1.2.3", false);
        assert_eq!(
            b,
            json!({"type":"runtime_not_found","message":"Runtime not found","code":404,"version":"1.2.3"})
        );
        let d = e.body("1.2.3", true);
        assert!(d["file"].as_str().is_some_and(|f| f.ends_with("error.rs")));
        assert!(d["line"].as_u64().is_some());
        assert!(d["trace"].is_array());
    }

    #[test]
    fn untyped_keeps_its_status() {
        let e = ApiError::untyped(400, "Param \"image\" is not optional.");
        assert_eq!((e.kind, e.code), (ErrorType::GeneralUnknown, 400));
    }
}
