import ArgumentParser
import Foundation
import SpotifyProxy

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The access keys of [access] keys_file: make one, list them (labels only, never keys), or revoke one.",
        subcommands: [New.self, List.self, Revoke.self])

    /// The keys file: `--keys-file`, else `[access] keys_file`.
    struct KeysFileOptions: ParsableArguments {
        @OptionGroup var file: ConfigFileOption
        @Option(name: .long, help: "The keys file (default: [access] keys_file of the configuration).")
        var keysFile: String?

        func path() throws -> String {
            let config = try self.file.load()
            guard let path = self.keysFile ?? config.access.keysFile else {
                throw configurationFailure(
                    ConfigurationError(
                        "no keys file: set [access] keys_file = \"keys\" in proxy.conf (relative to it), or pass --keys-file PATH"))
            }
            return path
        }
    }

    struct New: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a new access key: prints it once and appends its SHA-256 to the keys file.",
            discussion: "A running proxy takes it after a reload: spotify-proxy reload (or kill -HUP).")
        @Option(name: .long, help: "Who holds the key (letters, digits, '-', '_', '.').")
        var label: String
        @Option(name: .long, help: "The logged-in Spotify user whose token this key's user-scoped requests get.")
        var user: String?
        // Unconditional: `--budget -1` is a value to refuse, not a missing one.
        @Option(name: .long, parsing: .unconditional, help: "At most this many requests per rolling 30 s for this key.")
        var budget: Int?
        @OptionGroup var options: KeysFileOptions

        func validate() throws {
            if let budget, !AccessKeys.budgets.contains(budget) {
                throw ValidationError("--budget must be from 1 to \(AccessKeys.budgets.upperBound) requests per 30 s, got \(budget)")
            }
            do {
                try AccessKeys.checkLabel(self.label, at: "--label")
                if let user = self.user { try UserStore.checkLabel(user) }
            } catch {
                throw ValidationError(error.message)
            }
        }

        func run() async throws {
            let path = try self.options.path()
            let key = try self.add(to: path)
            writeStandardError(
                "new access key \(self.label) added to \(path); it is shown once, here (send it as Authorization: Bearer KEY):\n")
            announce(key)
            if let user = self.user, let config = try? self.options.file.load(), !UserStore(directory: config.users.directory).labels().contains(user),
                !(user == "default" && config.users.environmentRefreshToken != nil)
            {
                let users = config.users.directory
                writeStandardError(
                    "note: no user \(user) is logged in yet (\(users)); until spotify-proxy login --user \(user), this key's user-scoped requests (/v1/me, writes) are answered 401\n")
            }
        }

        /// Checks the label and appends the new key, holding the keys file's lock from one to the
        /// other (another keys command waits); the key, shown once by the caller.
        private func add(to path: String) throws -> String {
            let lock = try exitOnConfigurationError { try AccessKeys.lock(path) }
            defer { AccessKeys.unlock(lock) }
            let existing = FileManager.default.fileExists(atPath: path) ? try exitOnConfigurationError { try AccessKeys.load(path: path) } : AccessKeys([])
            try exitOnConfigurationError {
                guard existing.label(self.label) == nil else {
                    throw ConfigurationError("--label \(self.label): \(path) already has a key with that label; choose another")
                }
            }
            let (key, entry) = AccessKeys.generate(label: self.label, user: self.user, budget: self.budget)
            do {
                try AccessKeys.append(entry, to: path)
            } catch {
                writeStandardError("spotify-proxy: \((error as? ConfigurationError)?.message ?? "cannot write \(path): \(error)")\n")
                throw ExitCode(1)
            }
            return key
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a key from the keys file (by its label).",
            discussion: "A running proxy refuses it after a reload: spotify-proxy reload (or kill -HUP).")
        @Option(name: .long, help: "The label of the key to remove.")
        var label: String
        @OptionGroup var options: KeysFileOptions

        func run() async throws {
            let path = try self.options.path()
            try exitOnConfigurationError { try AccessKeys.remove(label: self.label, from: path) }
            print("access key \(self.label) removed from \(path); a running proxy refuses it once it reloads: spotify-proxy reload")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the keys file's labels, users and budgets (never the keys).")
        @OptionGroup var options: KeysFileOptions

        func run() async throws {
            let path = try self.options.path()
            let keys = try exitOnConfigurationError { try AccessKeys.load(path: path) }
            guard !keys.keys.isEmpty else {
                print("no keys in \(path); make one with: spotify-proxy keys new --label NAME")
                return
            }
            var rows = [["LABEL", "USER", "BUDGET (per 30 s)"]]
            for key in keys.keys { rows.append([key.label, key.user ?? "-", key.budget.map(String.init) ?? "-"]) }
            print(TextTable.render(rows, cellLimit: 40))
        }
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the running proxy's state: readiness, tokens, governor, cache, tee, requests per key over the last hour.",
        discussion: "Asks the proxy's GET /admin/status.")
    @OptionGroup var target: RunningProxyOptions
    @Flag(name: .long, help: "Print the proxy's JSON instead of a summary.")
    var json = false
    @OptionGroup var file: ConfigFileOption

    func run() async throws {
        let config = try self.configuration()
        let body = try requireOK(try await self.target.ask(method: "GET", path: "/admin/status", config: config))
        if self.json {
            print(String(decoding: body, as: UTF8.self))
            return
        }
        print(StatusText.render(try Self.decode(body), base: self.target.base(config)))
    }

    /// The configuration file's settings. A file that does not load (one whose reload the proxy
    /// refused, say) is gone without when --proxy names the proxy: its status says what it
    /// runs, and why it refused. Without --proxy, the address is the file's, so its error ends
    /// the command, with that way out named.
    private func configuration() throws -> ProxyConfiguration {
        do {
            return try self.file.read()
        } catch {
            guard self.target.proxy != nil else {
                var hinted = error
                hinted.message += " (to read a running proxy's status without this file, give --proxy URL, and --key KEY when it has keys)"
                throw configurationFailure(hinted)
            }
            writeStandardError("spotify-proxy: warning: \(error.message); asking the proxy at --proxy without the file\n")
            return ProxyConfiguration()
        }
    }

    /// The proxy's status in `body`; anything else ends the command with a message that shows it.
    static func decode(_ body: Data) throws -> ProxyStatus {
        guard let status = try? ProxyStatus.decoder().decode(ProxyStatus.self, from: body) else {
            writeStandardError("spotify-proxy: the proxy's status is not what this version reads: \(String(decoding: body, as: UTF8.self))\n")
            throw ExitCode(1)
        }
        return status
    }
}

struct Reload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make the running proxy reload its configuration, keys file and certificate (sends it SIGHUP).",
        discussion:
            "The proxy on this machine is found by its status (its pid), or over HTTPS, when the certificate files were replaced in place, as the process listening on the port; the outcome is read back from its status.")
    @OptionGroup var target: RunningProxyOptions
    @OptionGroup var file: ConfigFileOption

    func run() async throws {
        let config = try self.file.load()
        let base = self.target.base(config)
        // The files the proxy would refuse the reload for, read now: the keys file, and the
        // certificate and key of a proxy serving HTTPS (a plain one reads them at its restart).
        // Not the rest: the credentials may come from the proxy's own environment, and the
        // address keys are required for is the one it listens on, not the file's.
        do throws(ConfigurationError) {
            if let path = config.access.keysFile {
                // What the proxy will log about them, said here too.
                for warning in try AccessKeys.load(path: path).warnings { writeStandardError("spotify-proxy: warning: \(warning)\n") }
            }
            if base.hasPrefix("https://") { _ = try config.listenerTLS() }
        } catch {
            writeStandardError("spotify-proxy: the proxy would refuse this configuration, so nothing was signalled: \(error.message)\n")
            // A configuration error, as the file's own are (2); 1 is for a proxy that cannot be reached or signalled.
            throw ExitCode(2)
        }
        let host = base.split(separator: "://").last.map { $0.prefix { $0 != "/" } }.map { $0.hasPrefix("[") ? String($0.dropFirst().prefix { $0 != "]" }) : String($0.prefix { $0 != ":" }) } ?? ""
        var probe = ProxyConfiguration()
        probe.listenHost = host
        guard probe.listensOnLoopbackOnly else {
            writeStandardError(
                "spotify-proxy: reload signals the proxy's process, so it works for a proxy on this machine only (\(base) is not a loopback address); run it there, or send it SIGHUP\n")
            throw ExitCode(1)
        }
        // The proxy's status names its pid. Over HTTPS, with the certificate files replaced in
        // place, the proxy still serves the old certificate, which the file on disk no longer
        // vouches for: then the pid is the one listening on the port, and the status is read
        // once the reload has made the proxy serve the new one.
        // A key the proxy refuses but the keys file on disk holds (a new one, or one put back)
        // is held once the reload applies the file: the pid is then the port's, as above.
        var before: ProxyStatus?
        var certificateRefused = false
        var keyHeldAfterReload = false
        do {
            let answered = try await self.target.send(method: "GET", path: "/admin/status", config: config)
            if answered.status == 401, let key = self.target.givenKey, let path = config.access.keysFile,
                (try? AccessKeys.load(path: path))?.authenticate(Substring(key)) != nil
            {
                keyHeldAfterReload = true
            } else {
                before = try Self.status(from: answered)
            }
        } catch let exit as ExitCode {
            throw exit  // it answered, but not with its status: said, and ended
        } catch {
            before = nil
            // The proxy's certificate is not the file's (curl refused it; its words vary).
            certificateRefused = (error as? UpstreamError)?.certificateRefused == true
        }
        let port = URLComponents(string: base)?.port ?? (base.hasPrefix("https://") ? 443 : 80)
        guard let pid = before?.pid ?? (certificateRefused || keyHeldAfterReload ? ListeningProcess.serving(port: port) : nil) else {
            // Says why it does not answer, and exits.
            _ = try Self.status(
                from: try await self.target.ask(
                    method: "GET", path: "/admin/status", config: config,
                    unanswered: self.target.proxy == nil
                        ? "; a proxy keeps its address (and HTTP or HTTPS) until it restarts: if server.listen or tls_cert changed since it started, give --proxy with the address it was started with"
                        : ""))
            writeStandardError("spotify-proxy: the proxy's status could not be read at first; nothing was signalled: run reload again\n")
            throw ExitCode(1)
        }
        // The pid must be a spotify-proxy: never signal a stranger that happens to hold that pid
        // here. One running this very executable is one, whatever its file is called.
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) ?? ""
        let this = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        // A binary replaced since the proxy started reads "PATH (deleted)" there.
        let running = executable.hasSuffix(" (deleted)") ? String(executable.dropLast(" (deleted)".count)) : executable
        guard URL(fileURLWithPath: running).lastPathComponent.hasPrefix("spotify-proxy") || (!running.isEmpty && running == this) else {
            writeStandardError(
                "spotify-proxy: the proxy at \(base) is pid \(pid), but that process here is not spotify-proxy (\(executable.isEmpty ? "not found" : executable)); is it in a container? send it SIGHUP there\n")
            throw ExitCode(1)
        }
        // Whole seconds: the status gives the reload's time to the second.
        let signalled = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
        guard kill(pid, SIGHUP) == 0 else {
            writeStandardError(
                "spotify-proxy: cannot signal the proxy (pid \(pid)): \(String(cString: strerror(errno))); it must run on this machine, as you\n")
            throw ExitCode(1)
        }
        if certificateRefused, config.tlsCertificate == nil {
            // Serving HTTPS while the file names no certificate (turned off, which waits for a
            // restart): nothing here can check the proxy's certificate, so its status is not read.
            print(
                "sent SIGHUP to pid \(pid), the spotify-proxy serving \(base); the file names no tls_cert, so its status cannot be read over HTTPS to see the outcome: the proxy's log says it (turning HTTPS off takes effect at its next restart)")
            return
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            // Without `before`: unreadable until the proxy serves the certificate on disk, which a
            // reload applied does.
            guard let answered = try? await self.target.send(method: "GET", path: "/admin/status", config: config) else { continue }
            if answered.status == 401 {
                // Not yet the file's keys (or refused): wait for them.
                if keyHeldAfterReload { continue }
                // Readable before the signal (or, after a certificate rotation, served only once a reload
                // applied the new one), refused now: the reload changed the keys.
                print(
                    "configuration reloaded; the proxy now refuses this command's access key (or asks for one): give --key KEY (or SPOTIFY_PROXY_KEY) to read its status")
                return
            }
            let after = try Self.status(from: answered)
            if let before {
                guard (after.reload?.attempts ?? 0) > (before.reload?.attempts ?? 0) else { continue }
            } else {
                // An earlier reload's record does not count.
                guard let at = after.reload?.at, at >= signalled else { continue }
            }
            guard let reload = after.reload else { continue }
            if let error = reload.error {
                writeStandardError("spotify-proxy: reload refused, the running configuration stays: \(error)\n")
                throw ExitCode(2)
            }
            print("configuration reloaded (reload \(reload.generation) since start; access keys: \(after.access?.keys.map(String.init) ?? "off"))")
            if let atRestart = reload.atRestart { print("changed in the file, in force at the next restart: \(atRestart.joined(separator: ", "))") }
            return
        }
        if keyHeldAfterReload {
            writeStandardError(
                "spotify-proxy: sent SIGHUP to pid \(pid), but within 10 s it did not take this command's key, which the keys file holds; the reload may have been refused: spotify-proxy check-config --config FILE says why (so does the proxy's log)\n")
        } else if before == nil {
            writeStandardError(
                "spotify-proxy: sent SIGHUP to pid \(pid), but within 10 s it did not serve the certificate in \(config.tlsCertificate ?? "tls_cert"); the reload may have been refused: spotify-proxy check-config --config FILE says why (so does the proxy's log)\n")
        } else {
            writeStandardError("spotify-proxy: sent SIGHUP to pid \(pid), but its status showed no reload within 10 s\n")
        }
        throw ExitCode(1)
    }

    /// The status in `response`; any other answer ends the command with it.
    private static func status(from response: UpstreamClient.BufferedResponse) throws -> ProxyStatus {
        try Status.decode(try requireOK(response))
    }
}
