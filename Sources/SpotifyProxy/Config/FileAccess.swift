#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What `check-config` asks of a configured path before `serve` opens it.
enum FileAccess {
    /// This process may use `path` for `mode` (`R_OK`, `W_OK`, `X_OK`), judged by its effective
    /// ids as `open` judges them: `access()` uses the real ids, which differ in a set-user-id start.
    static func permits(_ path: String, _ mode: Int32) -> Bool {
        faccessat(AT_FDCWD, path, mode, AT_EACCESS) == 0
    }
}
