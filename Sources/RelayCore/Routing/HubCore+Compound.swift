// The compound methods (Nulstar) of `HubCore`; see HubCore.swift for the state they work on.

extension HubCore {
    // MARK: - Compound methods

    mutating func registerCompound(_ command: LIMECommand, name: String, from session: SessionID) -> [Output] {
        func invalid(_ text: String) -> [Output] {
            refuse(session, command, ReasonCode.commandInvalidArgument, "Invalid compound method: \(text)")
        }
        guard Self.isValidName(name) else { return invalid("'\(name)' is not a valid name") }
        if let reason = serveRefusal("compound/\(name)", from: session) { return [reply(session, command.failure(reason))] }
        guard let object = command.resource?.objectValue, let list = object["methods"]?.arrayValue, !list.isEmpty else {
            return invalid("'methods' must be a non-empty array")
        }
        var steps: [CompoundStep] = []
        for value in list {
            guard let step = value.objectValue, let service = step["service"]?.stringValue?.lowercased(),
                let method = step["method"]?.stringValue
            else {
                return invalid("every step needs 'service' and 'method'")
            }
            guard let description = services[service]?.description.method(method) else {
                return invalid("'\(service).\(method)' is not a registered method")
            }
            var aliases: [String: String] = [:]
            for member in step["aliases"]?.objectValue ?? [:] {
                guard let target = member.value.stringValue, description.parameters.contains(where: { $0.name == target }) else {
                    return invalid("alias '\(member.key)' must name a parameter of '\(service).\(method)'")
                }
                aliases[member.key] = target
            }
            steps.append(CompoundStep(service: service, method: method, aliases: aliases, presets: step["presets"]?.objectValue ?? [:]))
        }
        if let existing = compounds[name.lowercased()], existing.owner != session {
            return refuse(session, command, RelayReasonCode.registrationConflict, "Compound method '\(name)' is registered by another node")
        }
        compounds[name.lowercased()] = CompoundMethod(
            name: name, description: object["description"]?.stringValue, steps: steps, owner: session)
        return [reply(session, command.success())]
    }

    mutating func unregisterCompound(_ command: LIMECommand, name: String, from session: SessionID) -> [Output] {
        guard let existing = compounds[name.lowercased()], existing.owner == session else {
            return refuse(session, command, ReasonCode.commandResourceNotFound, "This node registered no compound method '\(name)'")
        }
        compounds[name.lowercased()] = nil
        return [reply(session, command.success())]
    }

    mutating func callCompound(_ command: LIMECommand, name: String, from session: SessionID) -> [Output] {
        guard let callerID = command.header.id else { return [] }
        if let reason = callRefusal("compound", method: name, from: session) { return [reply(session, command.failure(reason))] }
        guard let compound = compounds[name.lowercased()] else {
            return refuse(session, command, ReasonCode.commandResourceNotFound, "No compound method '\(name)'")
        }
        guard command.resource == nil || command.resource?.objectValue != nil else {
            return refuse(session, command, ReasonCode.commandInvalidArgument, "Parameters must be a JSON object")
        }
        let progress = CompoundProgress(
            name: compound.name, steps: compound.steps, index: 0, params: command.resource?.objectValue ?? [:], results: [:])
        return compoundStep(
            progress, caller: CallerKey(session: session, id: callerID), callerNode: command.header.from ?? configuration.hubNode,
            template: tracedRequest(command))
    }

    /// Calls the next step of a compound method, or answers the caller when all are done.
    mutating func compoundStep(_ progress: CompoundProgress, caller: CallerKey, callerNode: Node, template: LIMECommand) -> [Output] {
        guard progress.index < progress.steps.count else {
            var answer = LIMECommand(
                header: EnvelopeHeader(id: caller.id, from: configuration.hubNode, to: callerNode), method: template.method,
                type: "application/json", resource: .object(progress.results), status: .success)
            let trace = TraceContext.carried(in: template.header.metadata)
            answer.header.metadata = trace.isEmpty ? nil : trace
            return [.send(caller.session, .command(answer))]
        }
        let step = progress.steps[progress.index]
        var params = step.presets
        for member in progress.params {
            params[step.aliases[member.key] ?? member.key] = member.value
        }
        // Only what the method takes: a compound's parameters may serve several steps.
        if let method = services[step.service]?.description.method(step.method), !method.acceptsAnyParameters {
            let accepted = Set(method.parameters.map(\.name))
            params = JSONObject(params.members.filter { accepted.contains($0.key) })
        }
        var command = template
        command.resource = .object(params)
        command.header.from = callerNode
        if let reason = checkCall(command, service: step.service, method: step.method, from: caller.session) {
            var failed = template.failure(
                Reason(
                    code: reason.code,
                    description: "Compound method '\(progress.name)' failed at \(step.service).\(step.method): \(reason.description)"))
            failed.header.from = configuration.hubNode
            failed.header.to = callerNode
            return [.send(caller.session, .command(failed))]
        }
        let deadline = template.header.metadata?["#deadline"].flatMap { Int($0) } ?? configuration.defaultDeadlineMilliseconds
        return dispatch(
            command, caller: caller, service: step.service, method: step.method, purpose: .compound(progress), deadline: deadline)
    }
}
