import Crypto
import Foundation

/// One access key of `[access] keys_file`: who holds it, what it may spend, whose Spotify user
/// its user-scoped requests get. The key itself is never kept, only its SHA-256.
public struct AccessKey: Sendable, Equatable {
    public var label: String
    /// SHA-256 of the key's bytes.
    public var hash: [UInt8]
    /// `user=LABEL`: the logged-in Spotify user whose token this key's user-scoped requests get.
    public var user: String?
    /// `budget=N`: at most this many requests per rolling 30 s for this key.
    public var budget: Int?

    public init(label: String, hash: [UInt8], user: String? = nil, budget: Int? = nil) {
        self.label = label
        self.hash = hash
        self.user = user
        self.budget = budget
    }

    /// The line `keys new` appends: `LABEL sha256:HEX [user=LABEL] [budget=N]`.
    public var line: String {
        var line = "\(self.label) sha256:\(AccessKeys.hex(self.hash))"
        if let user = self.user { line += " user=\(user)" }
        if let budget = self.budget { line += " budget=\(budget)" }
        return line
    }
}

/// The keys of a keys file: parsed, and asked which key (if any) a client presented.
///
/// File format, one key per line, `#` starts a comment:
///
///     alice sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 user=alice budget=60
///     ci    a-plain-key-written-here
///
/// A line's second field is the key's SHA-256 (`sha256:` and 64 hex digits, what `keys new`
/// writes) or the key itself; optional fields follow.
public struct AccessKeys: Sendable, Equatable {
    public private(set) var keys: [AccessKey]
    /// The labels whose key is written in the file itself and is short enough to guess
    /// (under ``guessableLength`` characters): warned of at start, at a reload and by `check-config`.
    public private(set) var guessable: [String] = []
    public static let guessableLength = 16
    /// What `budget=` may be: requests per rolling 30 s (a million is over 33,000 a second).
    public static let budgets = 1...1_000_000

    /// The labels whose key is written in the file itself, not as its hash.
    public private(set) var written: [String] = []
    /// The file's path and mode when users other than its owner may read it (``load(path:)``).
    public private(set) var readableByOthers: (path: String, mode: mode_t)?

    /// What to warn of at start, at a reload and in `check-config`: ``guessable`` keys, and
    /// keys written out in a file others may read (as ssh refuses a private key others can read).
    public var warnings: [String] {
        var warnings: [String] = []
        if self.keys.isEmpty {
            warnings.append(
                "the keys file holds no keys: every request but /healthz is refused 401; add one with spotify-proxy keys new --label NAME and run spotify-proxy reload (or remove [access] keys_file to turn keys off)")
        }
        if !self.guessable.isEmpty {
            warnings.append(
                "the access keys of \(self.guessable.joined(separator: ", ")) are written in the keys file and shorter than \(Self.guessableLength) characters: "
                    + "anyone who guesses one spends your app's quota; replace them with spotify-proxy keys new --label NAME (256-bit keys, stored as hashes)")
        }
        if let (path, mode) = self.readableByOthers, !self.written.isEmpty {
            warnings.append(
                "the keys file \(path) may be read by other users (mode \(String(mode & 0o777, radix: 8))) and holds the keys of \(self.written.joined(separator: ", ")) written out: "
                    + "chmod 600 it, or replace them with spotify-proxy keys new --label NAME (stored as hashes)")
        }
        return warnings
    }

    public static func == (lhs: AccessKeys, rhs: AccessKeys) -> Bool {
        lhs.keys == rhs.keys && lhs.guessable == rhs.guessable && lhs.written == rhs.written
            && lhs.readableByOthers?.path == rhs.readableByOthers?.path && lhs.readableByOthers?.mode == rhs.readableByOthers?.mode
    }

    public init(_ keys: [AccessKey]) {
        self.keys = keys
    }

    public static func parse(_ text: String, source: String) throws(ConfigurationError) -> AccessKeys {
        var keys: [AccessKey] = []
        var guessable: [String] = []
        var written: [String] = []
        let text = Self.byteOrderMarkStripped(Substring(text)).rest
        // \r\n is one Character in Swift: split on every kind of line end.
        for (index, rawLine) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let line = rawLine.prefix { $0 != "#" }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            guard !fields.isEmpty else { continue }
            let at = "\(source) line \(index + 1)"
            guard fields.count >= 2 else {
                throw ConfigurationError("\(at): a key line is LABEL KEY or LABEL sha256:HEX; create keys with spotify-proxy keys new --label NAME")
            }
            let label = String(fields[0])
            try Self.checkLabel(label, at: at)
            guard !keys.contains(where: { $0.label == label }) else {
                throw ConfigurationError("\(at): the label \(label) is used twice; each key needs a label of its own")
            }
            // `bob budget=5` with the key forgotten: its option must not become a key anyone can guess.
            if ["user=", "budget="].contains(where: { fields[1].hasPrefix($0) }) {
                throw ConfigurationError(
                    "\(at): \(label) has no key: its second field is an option (user= or budget=); the key (or sha256:HEX) comes right after the label: make one with spotify-proxy keys new --label \(label)")
            }
            var key = AccessKey(label: label, hash: try Self.hash(of: fields[1], at: at))
            // One key under two labels would be counted, budgeted and logged under the first only.
            if let holder = keys.first(where: { $0.hash == key.hash }) {
                throw ConfigurationError("\(at): this key is also \(holder.label)'s; give each label a key of its own (spotify-proxy keys new --label \(label))")
            }
            // Field values are never quoted in errors: a mistyped line may hold a key.
            for (position, field) in fields.dropFirst(2).enumerated() {
                let parts = field.split(separator: "=", maxSplits: 1)
                guard parts.count == 2 else {
                    throw ConfigurationError("\(at): field \(position + 3) is not user=LABEL or budget=N (a key must not contain spaces)")
                }
                switch parts[0] {
                case "user":
                    guard key.user == nil else { throw ConfigurationError("\(at): user= is given twice; keep one") }
                    do { try UserStore.checkLabel(String(parts[1])) } catch { throw ConfigurationError("\(at): \(error.message)") }
                    key.user = String(parts[1])
                case "budget":
                    guard key.budget == nil else { throw ConfigurationError("\(at): budget= is given twice; keep one") }
                    guard let budget = Int(parts[1]), Self.budgets.contains(budget) else {
                        throw ConfigurationError("\(at): budget= must be a whole number of requests per 30 s, from 1 to \(Self.budgets.upperBound)")
                    }
                    key.budget = budget
                default:
                    throw ConfigurationError("\(at): field \(position + 3) is not user=LABEL or budget=N")
                }
            }
            keys.append(key)
            if !fields[1].hasPrefix("sha256:") {
                written.append(label)
                if fields[1].count < Self.guessableLength { guessable.append(label) }
            }
        }
        var parsed = AccessKeys(keys)
        parsed.guessable = guessable
        parsed.written = written
        return parsed
    }

    /// `text` without a leading byte order mark (editors on Windows write one), and whether it had one.
    static func byteOrderMarkStripped(_ text: Substring) -> (rest: Substring, hadMark: Bool) {
        guard text.unicodeScalars.first == "\u{FEFF}" else { return (text, false) }
        return (Substring(text.unicodeScalars.dropFirst()), true)
    }

    /// Reads and parses a keys file; a missing file says how to make one.
    public static func load(path: String) throws(ConfigurationError) -> AccessKeys {
        if let why = ConfigurationError.unreadableFile(path), why != "no such file" {
            throw ConfigurationError("access.keys_file: cannot read \(path): \(why); \(ConfigurationError.fix(for: why, "give the keys file's path"))")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError(
                "access.keys_file: cannot read \(path); create it with: spotify-proxy keys new --label NAME (it makes the file)")
        }
        var keys = try Self.parse(String(decoding: data, as: UTF8.self), source: path)
        var info = stat()
        if stat(path, &info) == 0, info.st_mode & 0o044 != 0 { keys.readableByOthers = (path, info.st_mode) }
        return keys
    }

    /// The key presented, if it is one of these. Constant time by construction: the presented key
    /// is hashed, then compared with every key's hash over all 32 bytes, with no early return on
    /// a differing byte or on a match.
    public func authenticate(_ presented: Substring) -> AccessKey? {
        let digest = Array(SHA256.hash(data: Array(presented.utf8)))
        var found: Int?
        for (index, key) in self.keys.enumerated() where Self.constantTimeEqual(key.hash, digest) {
            found = index
        }
        return found.map { self.keys[$0] }
    }

    /// Equal, looking at every byte whatever the bytes are (both are SHA-256 digests: 32 bytes).
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }

    public func label(_ label: String) -> AccessKey? { self.keys.first { $0.label == label } }

    public static func checkLabel(_ label: String, at: String) throws(ConfigurationError) {
        do { try UserStore.checkLabel(label) } catch {
            throw ConfigurationError("\(at): the key label \"\(label)\" is not usable: use up to 64 letters, digits, '-', '_' or '.', not starting with '.'")
        }
    }

    private static func hash(of field: Substring, at: String) throws(ConfigurationError) -> [UInt8] {
        guard field.hasPrefix("sha256:") else { return Array(SHA256.hash(data: Array(field.utf8))) }
        let hex = field.dropFirst("sha256:".count)
        guard hex.utf8.count == 64, let bytes = Self.bytes(hex: hex) else {
            throw ConfigurationError("\(at): sha256: must be followed by 64 hex digits (the SHA-256 of the key)")
        }
        return bytes
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }

    private static func bytes(hex: Substring) -> [UInt8]? {
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        return bytes
    }

    /// A new random key (256 bits, URL-safe) and its entry, for `keys new`.
    public static func generate(label: String, user: String?, budget: Int?) -> (key: String, entry: AccessKey) {
        var generator = SystemRandomNumberGenerator()
        let random = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        let key = "spk_" + Data(random).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        return (key, AccessKey(label: label, hash: Array(SHA256.hash(data: Array(key.utf8))), user: user, budget: budget))
    }
}

extension AccessKeys {
    /// Removes `label`'s key from the keys file at `path` (the file a symbolic link there names),
    /// every other line (comments included) kept as it is; the file is replaced whole, keeping
    /// its mode and owner (``FileAccess/replaceAtomically(_:with:mode:)``), so a proxy reloading
    /// meanwhile reads the old file or the new one. Throws when no key has that label.
    public static func remove(label: String, from path: String) throws(ConfigurationError) {
        // The file a symbolic link names (one a configuration tool manages) is the one changed.
        let target = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        let lock = try Self.lock(path)
        defer { Self.unlock(lock) }
        guard let data = FileManager.default.contents(atPath: target) else {
            throw ConfigurationError("cannot read \(path): \(ConfigurationError.unreadableFile(path) ?? "no such file")")
        }
        // Split as `parse` splits (every kind of line end), each line kept with its own end.
        let text = String(decoding: data, as: UTF8.self)
        var kept = ""
        var removed = false
        // A byte order mark is kept, not taken for part of the first label (as `parse` does).
        let marked = Self.byteOrderMarkStripped(Substring(text))
        var rest = marked.rest
        if marked.hadMark { kept = "\u{FEFF}" }
        while !rest.isEmpty {
            let end = rest.firstIndex(where: \.isNewline).map { rest.index(after: $0) } ?? rest.endIndex
            let line = rest[..<end]
            rest = rest[end...]
            let fields = line.prefix { $0 != "#" }.split(whereSeparator: { $0 == " " || $0 == "\t" || $0.isNewline })
            if fields.first.map(String.init) == label {
                removed = true
            } else {
                kept += line
            }
        }
        guard removed else {
            throw ConfigurationError("\(path) has no key labelled \(label); spotify-proxy keys list shows the labels")
        }
        if let failure = FileAccess.replaceAtomically(target, with: Array(kept.utf8), mode: 0o600) { throw ConfigurationError(failure) }
    }

    /// Takes the keys file's lock: an exclusive `flock` on its directory (the directory of the
    /// file a symbolic link there names), held until ``unlock(_:)``. `keys new` and `keys revoke`
    /// each read the file and then change it: two at once, unlocked, lost one of the changes (a
    /// revoked key kept, a new key printed but not written). A lock on the file itself would not
    /// do: a revoke replaces the file, and a waiter would hold the old one.
    public static func lock(_ path: String) throws(ConfigurationError) -> Int32 {
        let directory = URL(fileURLWithPath: path).resolvingSymlinksInPath().deletingLastPathComponent().path
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else {
            let why = String(cString: strerror(errno))
            let fix = errno == ENOENT ? "; create its directory first, or give another --keys-file" : ""
            throw ConfigurationError("cannot write \(path): its directory \(directory): \(why)\(fix)")
        }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else {
                let why = String(cString: strerror(errno))
                close(fd)
                throw ConfigurationError("cannot lock \(directory) to change \(path): \(why)")
            }
        }
        return fd
    }

    public static func unlock(_ lock: Int32) {
        close(lock)
    }

    /// Appends `entry`'s line to the keys file, creating it (mode 0600) if needed; written and
    /// fsynced before returning. The caller holds ``lock(_:)`` across its check and this.
    public static func append(_ entry: AccessKey, to path: String) throws {
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            let code = errno
            let why = String(cString: strerror(code))
            let fix = code == ENOENT ? "; create its directory first, or give another --keys-file" : code == EISDIR ? "; give a file's path" : ""
            throw ConfigurationError("cannot write \(path): \(why)\(fix)")
        }
        defer { close(fd) }
        // A file whose last line has no newline gets one first.
        var needsNewline = false
        if let existing = FileManager.default.contents(atPath: path), let last = existing.last, last != UInt8(ascii: "\n") { needsNewline = true }
        let line = Array(((needsNewline ? "\n" : "") + entry.line + "\n").utf8)
        var offset = 0
        while offset < line.count {
            let written = line[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            offset += written
        }
        guard fsync(fd) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    }
}
