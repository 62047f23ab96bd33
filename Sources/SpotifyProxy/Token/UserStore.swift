import Foundation

/// What `login` stores for one user: the refresh token and what it was granted.
public struct StoredUser: Codable, Sendable, Equatable {
    public var label: String
    public var refreshToken: String
    public var scopes: [String]
    /// The Spotify user id (`/v1/me`'s `id`), when it could be read.
    public var spotifyUserID: String?
    /// When the user agreed: Spotify's refresh tokens expire six months later, whatever refreshes happen.
    public var authorizedAt: Date
    /// For a user that began as `SPOTIFY_REFRESH_TOKEN` (not a `login`): that token's SHA-256
    /// (hex), kept through its rotations, so that a new token in the variable is told from the
    /// one this file's chain began with.
    public var environmentTokenSHA256: String?

    /// Written by `login`, not begun from `SPOTIFY_REFRESH_TOKEN`: such a file has its
    /// fingerprint, or (written before the proxy kept one) neither a Spotify id nor scopes.
    var isLogin: Bool { self.environmentTokenSHA256 == nil && (self.spotifyUserID != nil || !self.scopes.isEmpty) }

    /// `authorizedAt` is kept to the second, as the file stores it.
    public init(
        label: String, refreshToken: String, scopes: [String], spotifyUserID: String?, authorizedAt: Date, environmentTokenSHA256: String? = nil
    ) {
        self.label = label
        self.refreshToken = refreshToken
        self.scopes = scopes
        self.spotifyUserID = spotifyUserID
        self.authorizedAt = Date(timeIntervalSince1970: authorizedAt.timeIntervalSince1970.rounded(.down))
        self.environmentTokenSHA256 = environmentTokenSHA256
    }

    enum CodingKeys: String, CodingKey {
        case label
        case refreshToken = "refresh_token"
        case scopes
        case spotifyUserID = "spotify_user_id"
        case authorizedAt = "authorized_at"
        case environmentTokenSHA256 = "environment_token_sha256"
    }

    /// Spotify refresh tokens live six months from authorization (2026 policy).
    public static let refreshTokenLifetime: TimeInterval = 182 * 24 * 3600

    public var refreshTokenExpiresAt: Date { self.authorizedAt.addingTimeInterval(Self.refreshTokenLifetime) }

    /// Whole days until the refresh token expires (negative once it has).
    public func daysLeft(now: Date) -> Int { Self.daysLeft(authorizedAt: self.authorizedAt, now: now) }

    public static func daysLeft(authorizedAt: Date, now: Date) -> Int {
        Int((authorizedAt.addingTimeInterval(Self.refreshTokenLifetime).timeIntervalSince(now) / 86_400).rounded(.down))
    }
}

/// The users' refresh tokens on disk: `[users] dir`, one `LABEL.json` per user, the directory
/// 0700 and each file 0600, every write atomic (a temporary file, fsynced, renamed over the old
/// one, the directory fsynced): a crash leaves the old token or the new one, never half of one.
/// Where a user's token fetcher reads its login and writes the rotated refresh token: the
/// ``UserStore`` (a test's own makes writes fail).
protocol UserFiles: Sendable {
    func load(_ label: String) throws(UserStoreError) -> StoredUser?
    func save(_ user: StoredUser) throws(UserStoreError)
}

public struct UserStore: UserFiles, Sendable {
    public let directory: String
    /// How its messages name the `login` command (with the configuration's `--config`).
    public let commands: CommandHint

    public init(directory: String, commands: CommandHint = CommandHint()) {
        self.directory = directory
        self.commands = commands
    }

    /// A login can be stored here: the directory is writable, or can be made. Asked before the
    /// user is sent to agree: an authorization code cannot be used twice.
    public func checkCanSave() throws(ConfigurationError) {
        try FileAccess.checkCreatable(directory: self.directory, key: "users.dir")
    }

    /// Labels name files: letters, digits, `-`, `_` and `.`, not starting with `.`, at most 64.
    public static func checkLabel(_ label: String) throws(ConfigurationError) {
        let allowed = label.utf8.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
                || byte == UInt8(ascii: ".")
        }
        guard !label.isEmpty, label.utf8.count <= 64, allowed, !label.hasPrefix(".") else {
            throw ConfigurationError(
                "the user label \"\(label)\" is not usable: use up to 64 letters, digits, '-', '_' or '.', not starting with '.' (e.g. --user alice)")
        }
    }

    public func path(of label: String) -> String { self.directory + "/" + label + ".json" }

    /// Every stored user's label, sorted: the files named as `login` names them (a copy such
    /// as `default copy.json` is none).
    public func labels() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: self.directory)) ?? []
        return names.filter { $0.hasSuffix(".json") }.map { String($0.dropLast(".json".count)) }
            .filter { (try? Self.checkLabel($0)) != nil }.sorted()
    }

    public func load(_ label: String) throws(UserStoreError) -> StoredUser? {
        let path = self.path(of: label)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        if let why = ConfigurationError.unreadableFile(path) {
            var error = UserStoreError("cannot read the user file \(path): \(why); remove it, or run `\(self.commands.login(user: label))` to write it again")
            // A directory is no login; a file this user may not read (yet) may well be one.
            error.notALogin = why == "a directory, not a file"
            throw error
        }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw UserStoreError("cannot read the user file \(path): \(error.localizedDescription); run `\(self.commands.login(user: label))` to write it again")
        }
        do {
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            return try decoder.decode(StoredUser.self, from: data)
        } catch {
            var problem = UserStoreError("the user file \(path) is not a login (not the JSON `login` writes); remove it, or run `\(self.commands.login(user: label))` to write it again")
            problem.notALogin = true
            throw problem
        }
    }

    /// Writes `user` atomically with mode 0600 (a file given a wider mode since is 0600 again),
    /// creating the directory (0700) if needed.
    public func save(_ user: StoredUser) throws(UserStoreError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        encoder.dateEncodingStrategy = .iso8601
        let data: Data
        do { data = try encoder.encode(user) } catch { throw UserStoreError("cannot encode the user \(user.label): \(error)") }
        try self.ensureDirectory()
        if let failure = FileAccess.replaceAtomically(self.path(of: user.label), with: Array(data), mode: 0o600, forcingMode: true) { throw UserStoreError(failure) }
    }

    /// Makes `label`'s file 0600 again when it was given more (its group or others could read
    /// the refresh token); the mode it had, else nil.
    public func narrowMode(of label: String) -> mode_t? {
        let path = self.path(of: label)
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_mode & 0o077 != 0, chmod(path, 0o600) == 0 else { return nil }
        return info.st_mode & 0o7777
    }

    /// Deletes the user's file; false when there was none.
    public func delete(_ label: String) throws(UserStoreError) -> Bool {
        let path = self.path(of: label)
        guard FileManager.default.fileExists(atPath: path) else { return false }
        guard unlink(path) == 0 else { throw UserStoreError("cannot delete \(path): \(String(cString: strerror(errno)))") }
        FileAccess.syncDirectory(self.directory)
        return true
    }

    private func ensureDirectory() throws(UserStoreError) {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: self.directory, isDirectory: &isDirectory) {
            // An existing directory keeps the mode its owner gave it; the files are 0600 anyway.
            guard isDirectory.boolValue else { throw UserStoreError("\(self.directory) ([users] dir) is not a directory") }
            return
        }
        do {
            try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw UserStoreError("cannot create \(self.directory) ([users] dir): \(error.localizedDescription)")
        }
    }

}

/// A user file that cannot be read or written (a full disk, a permission), in words.
public struct UserStoreError: Error, Sendable, CustomStringConvertible {
    public var message: String
    /// The file is not a login (a directory, not `login`'s JSON); else it could not be read now.
    public var notALogin = false
    public init(_ message: String) { self.message = message }
    public var description: String { self.message }
}

extension ProxyConfiguration {
    /// A warning when `[users] dir` cannot hold logins (it can neither be written nor made):
    /// `login` would fail there, and the proxy could not write a user's rotated refresh token.
    /// Said by `check-config` and at the start; not an error, since a proxy without users never
    /// writes there.
    public var usersDirectoryWarning: String? {
        do throws(ConfigurationError) {
            try UserStore(directory: self.users.directory).checkCanSave()
            return nil
        } catch {
            return "\(error.message) (spotify-proxy login stores users there, and the proxy writes their rotated refresh tokens there)"
        }
    }
}
