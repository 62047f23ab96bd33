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
                let expires = status?.tokenExpiresInSeconds.map { $0 > 0 ? "\($0) s" : "expired" } ?? "-"
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

/// Rows as aligned columns (the last one left as it is), for the commands' tables. Cells are
/// text from elsewhere (Spotify's names, files): control characters are shown as `�`, never
/// sent to the terminal (an escape sequence in a name could clear or recolour it), and widths
/// are counted in terminal columns (a CJK or emoji character takes two).
public enum TextTable {
    /// `cell` made printable and in at most `width` columns: a longer one is cut, ending in "…".
    public static func clip(_ cell: String, to width: Int) -> String {
        let cell = Self.printable(cell)
        guard cell.columns > width else { return cell }
        var kept = ""
        var used = 0
        // Room for the "…" when there is room for anything.
        let room = width > 1 ? width - 1 : max(width, 0)
        for character in cell {
            guard used + character.columns <= room else { break }
            kept.append(character)
            used += character.columns
        }
        return width > 1 ? kept + "…" : kept
    }

    /// `cell` with its control characters (``isControl(_:)``: a tab and a line end too) as `�`.
    public static func printable(_ cell: String) -> String {
        guard cell.unicodeScalars.contains(where: Self.isControl) else { return cell }
        return String(String.UnicodeScalarView(cell.unicodeScalars.map { Self.isControl($0) ? "\u{FFFD}" : $0 }))
    }

    /// C0, DEL and C1 controls, and the bidirectional embeddings, overrides and isolates (which
    /// would reorder the rest of the line on screen).
    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0..<0x20, 0x7F...0x9F, 0x202A...0x202E, 0x2066...0x2069: true
        default: false
        }
    }

    /// Cells longer than `cellLimit` columns are cut, ending in "…".
    public static func render(_ rows: [[String]], cellLimit: Int = .max) -> String {
        guard let columns = rows.first.map({ $0.count - 1 }), columns >= 0 else { return "" }
        let cut = rows.map { row in row.enumerated().map { $0.offset < columns ? Self.clip($0.element, to: cellLimit) : Self.printable($0.element) } }
        let widths = (0..<columns).map { column in cut.map { $0[column].columns }.max() ?? 0 }
        return cut.map { row in
            ((0..<columns).map { row[$0].padded(to: widths[$0]) } + [row[columns]]).joined(separator: "  ")
        }.joined(separator: "\n")
    }
}

extension Character {
    /// The terminal columns it takes: 2 for East Asian wide and fullwidth characters and for
    /// emoji (by its first scalar, as `wcwidth` reads them), else 1.
    var columns: Int {
        guard let scalar = self.unicodeScalars.first?.value, scalar >= 0x1100 else { return 1 }
        switch scalar {
        case 0x1100...0x115F, 0x2E80...0x303E, 0x3041...0x33FF, 0x3400...0x4DBF, 0x4E00...0x9FFF, 0xA000...0xA4CF, 0xAC00...0xD7A3,
            0xF900...0xFAFF, 0xFE30...0xFE4F, 0xFF00...0xFF60, 0xFFE0...0xFFE6, 0x1F1E6...0x1F1FF, 0x1F300...0x1F64F, 0x1F680...0x1F6FF,
            0x1F900...0x1F9FF, 0x1FA70...0x1FAFF, 0x20000...0x3FFFD:
            return 2
        default:
            return 1
        }
    }
}

extension StringProtocol {
    /// The terminal columns it takes (``Character/columns``).
    var columns: Int { self.reduce(0) { $0 + $1.columns } }

    /// Left-aligned in `width` terminal columns (as people see them: `padding(toLength:)` counts
    /// UTF-16 units and would cut an emoji or an accented name), never cut.
    public func padded(to width: Int) -> String {
        String(self) + String(repeating: " ", count: Swift.max(0, width - self.columns))
    }
}
