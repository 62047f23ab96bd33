import Foundation

/// `spotify-proxy users`: one line per stored user, never a token.
public enum UsersTable {
    public static func render(_ users: [Result<StoredUser?, any Error>], now: Date) -> String {
        var rows = [["USER", "SPOTIFY ID", "REFRESH TOKEN", "SCOPES"]]
        for user in users {
            switch user {
            case .success(let user?):
                let days = user.daysLeft(now: now)
                let left = days < 0 ? "expired: log in again" : "\(days) days left"
                rows.append([user.label, user.spotifyUserID ?? "-", left, user.scopes.joined(separator: " ")])
            case .success(nil):
                continue
            case .failure(let error):
                rows.append(["?", "-", "unreadable: \(error)", ""])
            }
        }
        let widths = (0..<3).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            (0..<3).map { row[$0].padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ") + "  " + row[3]
        }.joined(separator: "\n")
    }
}
