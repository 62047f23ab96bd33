import SpotifyCatalog
/// `spotify-proxy library` as a plain-text table.
public enum LibraryTable {
    public static func render(_ rows: [StoredEntity], kind: SpotifyEntity.Kind) -> String {
        let columns = EntityRow.columns(for: kind).map(\.name)
        let header = ["id", "name"] + columns + ["last_seen"]
        var table = [header]
        for row in rows {
            let cells = columns.map { column -> String in
                switch row.columns[column] {
                case .string(let text): text
                case .bool(let flag): flag ? "true" : "false"
                case .number(let number): number.rounded() == number ? String(Int64(number)) : String(number)
                case .array(let items): items.compactMap(\.string).joined(separator: ", ")
                case .object, .null, nil: ""
                }
            }
            table.append([row.id, row.name] + cells + [row.lastSeen])
        }
        let widths = header.indices.map { index in min(40, table.map { TextTable.printable($0[index]).columns }.max() ?? 0) }
        var lines = table.map { cells in
            cells.enumerated().map { index, cell in TextTable.clip(cell, to: widths[index]).padded(to: widths[index]) }.joined(separator: "  ")
        }
        lines.insert(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "), at: 1)
        lines.append("(\(rows.count) \(rows.count == 1 ? String(kind.table.dropLast()) : kind.table))")
        return lines.joined(separator: "\n")
    }
}
