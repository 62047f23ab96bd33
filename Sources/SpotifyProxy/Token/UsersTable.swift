import Foundation

/// `spotify-proxy users`: one line per stored user, never a token. `live` is what the running
/// proxy reports (its `/readyz`), when it could be asked.
public enum UsersTable {
    /// What the running proxy said of its users: their states by label, or why it said nothing
    /// (the STATE column's text).
    public enum Live: Sendable {
        case states([String: UserStatus])
        case unavailable(String)
    }

    public static func render(_ users: [(label: String, file: Result<StoredUser?, any Error>)], live: Live, now: Date) -> String {
        var rows = [["USER", "SPOTIFY ID", "STATE", "TOKEN EXPIRES IN", "REFRESH TOKEN", "SCOPES"]]
        for (label, user) in users {
            switch user {
            case .success(let user?):
                let days = user.daysLeft(now: now)
                let status: UserStatus?
                let state: String
                switch live {
                case .states(let states):
                    status = states[user.label]
                    state = status?.state.rawValue ?? "(not loaded yet)"
                case .unavailable(let why):
                    (status, state) = (nil, why)
                }
                let expires = status?.tokenExpiresInSeconds.map { "\($0) s" } ?? "-"
                // A refresh token Spotify refused has no time left, whatever its age says.
                let left =
                    status?.state == .invalidGrant ? "refused: log in again"
                    : days < 0 ? "expired: log in again" : "\(days) days left"
                rows.append([user.label, user.spotifyUserID ?? "-", state, expires, left, user.scopes.joined(separator: " ")])
            case .success(nil):
                continue
            case .failure(let error):
                // Not a login: the proxy does not count it (the file's problem is in the last column).
                rows.append([label, "-", "not a login", "-", "-", "\(error)"])
            }
        }
        return TextTable.render(rows)
    }

    /// The `users` array of a `/readyz` answer, by label.
    public static func live(fromReadyz body: [UInt8]) -> [String: UserStatus] {
        struct Readyz: Decodable { var users: [UserStatus]? }
        guard let readyz = try? JSONDecoder().decode(Readyz.self, from: Data(body)) else { return [:] }
        return Dictionary((readyz.users ?? []).map { ($0.label, $0) }, uniquingKeysWith: { a, _ in a })
    }
}

/// Rows as aligned columns (the last one left as it is), for the commands' tables.
public enum TextTable {
    /// `cell` in at most `width` characters: a longer one is cut, ending in "…".
    public static func clip(_ cell: String, to width: Int) -> String {
        guard cell.count > width else { return cell }
        guard width > 1 else { return String(cell.prefix(max(width, 0))) }
        return String(cell.prefix(width - 1)) + "…"
    }

    /// Cells longer than `cellLimit` characters are cut, ending in "…".
    public static func render(_ rows: [[String]], cellLimit: Int = .max) -> String {
        guard let columns = rows.first.map({ $0.count - 1 }), columns >= 0 else { return "" }
        let cut = rows.map { row in row.enumerated().map { $0.offset < columns ? Self.clip($0.element, to: cellLimit) : $0.element } }
        let widths = (0..<columns).map { column in cut.map { $0[column].count }.max() ?? 0 }
        return cut.map { row in
            ((0..<columns).map { row[$0].padded(to: widths[$0]) } + [row[columns]]).joined(separator: "  ")
        }.joined(separator: "\n")
    }
}

extension StringProtocol {
    /// Left-aligned in `width` characters (as people count them: `padding(toLength:)` counts
    /// UTF-16 units and would cut an emoji or an accented name), never cut.
    public func padded(to width: Int) -> String {
        String(self) + String(repeating: " ", count: Swift.max(0, width - self.count))
    }
}
