/// Who may call a method (Nulstar's MethodScope).
public enum MethodScope: String, Sendable, Hashable, CaseIterable {
    /// Any node.
    case `public`
    /// Only nodes of the identities that serve the service.
    case `private`
    /// Only the hub's administrators (configuration `admins`).
    case admin
}

/// The JSON type a parameter must have.
public enum ParameterType: String, Sendable, Hashable, CaseIterable {
    case string, number, integer, boolean, object, array, any
}

/// One parameter of a method, with the constraints its values must meet.
public struct ParameterDescription: Sendable, Hashable {
    public var name: String
    public var type: ParameterType
    public var required: Bool
    public var description: String?
    /// A regular expression a string value must match as a whole (Nulstar's ParameterValidRegExp).
    public var pattern: String?
    /// Bounds of a number (Nulstar's ParameterValidRange).
    public var minimum: Double?
    public var maximum: Double?

    public init(
        name: String, type: ParameterType, required: Bool = true, description: String? = nil, pattern: String? = nil,
        minimum: Double? = nil, maximum: Double? = nil
    ) {
        self.name = name
        self.type = type
        self.required = required
        self.description = description
        self.pattern = pattern
        self.minimum = minimum
        self.maximum = maximum
    }
}

/// One method of a service.
public struct MethodDescription: Sendable, Hashable {
    public var name: String
    public var description: String?
    public var scope: MethodScope
    public var parameters: [ParameterDescription]
    /// The shortest period, in seconds, a period subscription to this method may ask for (nil: none allowed).
    public var minimumPeriod: Double?
    /// The fewest events an event subscription to this method may ask for (nil: none allowed).
    public var minimumEvents: Int?
    /// Whether any parameters are accepted (the description lists none to check against).
    public var acceptsAnyParameters: Bool

    public init(
        name: String, description: String? = nil, scope: MethodScope = .public, parameters: [ParameterDescription] = [],
        minimumPeriod: Double? = nil, minimumEvents: Int? = nil, acceptsAnyParameters: Bool = false
    ) {
        self.name = name
        self.description = description
        self.scope = scope
        self.parameters = parameters
        self.minimumPeriod = minimumPeriod
        self.minimumEvents = minimumEvents
        self.acceptsAnyParameters = acceptsAnyParameters
    }

    /// Why `params` do not suit this method, or nil when they do.
    public func validationError(_ params: JSONValue?) -> String? {
        let object: JSONObject
        switch params {
        case nil, .null?: object = JSONObject()
        case .object(let value)?: object = value
        default: return "Parameters of '\(name)' must be a JSON object"
        }
        if acceptsAnyParameters { return nil }
        let known = Set(parameters.map(\.name))
        if let unknown = object.keys.first(where: { !known.contains($0) }) {
            return "Method '\(name)' has no parameter '\(unknown)'"
        }
        for parameter in parameters {
            guard let value = object[parameter.name], value != .null else {
                if parameter.required { return "Parameter '\(parameter.name)' of '\(name)' is required" }
                continue
            }
            if let error = parameter.validationError(value) { return error }
        }
        return nil
    }
}

extension ParameterDescription {
    func validationError(_ value: JSONValue) -> String? {
        let matchesType: Bool
        switch (type, value) {
        case (.any, _), (.string, .string), (.boolean, .bool), (.object, .object), (.array, .array), (.number, .number): matchesType = true
        case (.integer, .number(let number)): matchesType = number.intValue != nil
        default: matchesType = false
        }
        guard matchesType else { return "Parameter '\(name)' must be of type \(type.rawValue)" }
        if let number = value.doubleValue {
            if let minimum, number < minimum { return "Parameter '\(name)' must be at least \(JSONNumber(minimum))" }
            if let maximum, number > maximum { return "Parameter '\(name)' must be at most \(JSONNumber(maximum))" }
        }
        if let pattern, let text = value.stringValue {
            guard let regex = try? Regex(pattern) else { return "Parameter '\(name)' has an invalid pattern" }
            if (try? regex.wholeMatch(in: text)) == nil { return "Parameter '\(name)' does not match the pattern \(pattern)" }
        }
        return nil
    }
}

/// What a node registers: a service name and its methods (Nulstar's RegisterAPI, nuropb's describe).
public struct ServiceDescription: Sendable, Hashable {
    public var name: String
    public var description: String?
    public var version: String?
    public var methods: [MethodDescription]

    public init(name: String, description: String? = nil, version: String? = nil, methods: [MethodDescription]) {
        self.name = name
        self.description = description
        self.version = version
        self.methods = methods
    }

    /// The method called `name`, or the catch-all method `*` when the service has one.
    public func method(_ name: String) -> MethodDescription? {
        methods.first { $0.name == name } ?? methods.first { $0.name == "*" }
    }
}

// MARK: - JSON form

extension ServiceDescription {
    /// Reads the JSON a node registers: `{"description", "version", "methods": [{"name", "description",
    /// "scope", "minPeriod", "minEvents", "parameters": [{"name", "type", "required", "pattern", "minimum", "maximum"}]}]}`.
    public init(name: String, json: JSONValue?) throws(Reason) {
        func invalid(_ text: String) -> Reason {
            Reason(code: ReasonCode.commandInvalidArgument, description: "Invalid service description: \(text)")
        }
        guard let object = json?.objectValue else { throw invalid("expected a JSON object") }
        guard let methodList = object["methods"]?.arrayValue, !methodList.isEmpty else {
            throw invalid("'methods' must be a non-empty array")
        }
        var methods: [MethodDescription] = []
        for methodValue in methodList {
            guard let method = methodValue.objectValue, let methodName = method["name"]?.stringValue, !methodName.isEmpty,
                !methodName.contains("/")
            else { throw invalid("every method needs a 'name' without '/'") }
            if methods.contains(where: { $0.name == methodName }) { throw invalid("method '\(methodName)' is listed twice") }
            let scopeName = method["scope"]?.stringValue ?? "public"
            guard let scope = MethodScope(rawValue: scopeName) else {
                throw invalid("scope '\(scopeName)' is not public, private or admin")
            }
            var parameters: [ParameterDescription] = []
            for parameterValue in method["parameters"]?.arrayValue ?? [] {
                guard let parameter = parameterValue.objectValue, let parameterName = parameter["name"]?.stringValue else {
                    throw invalid("every parameter of '\(methodName)' needs a 'name'")
                }
                let typeName = parameter["type"]?.stringValue ?? "any"
                guard let type = ParameterType(rawValue: typeName) else { throw invalid("parameter type '\(typeName)' is unknown") }
                let pattern = parameter["pattern"]?.stringValue
                if let pattern, (try? Regex(pattern)) == nil { throw invalid("pattern '\(pattern)' is not a regular expression") }
                parameters.append(
                    ParameterDescription(
                        name: parameterName, type: type, required: parameter["required"]?.boolValue ?? true,
                        description: parameter["description"]?.stringValue, pattern: pattern, minimum: parameter["minimum"]?.doubleValue,
                        maximum: parameter["maximum"]?.doubleValue))
            }
            methods.append(
                MethodDescription(
                    name: methodName, description: method["description"]?.stringValue, scope: scope, parameters: parameters,
                    minimumPeriod: method["minPeriod"]?.doubleValue, minimumEvents: method["minEvents"]?.intValue,
                    acceptsAnyParameters: method["parameters"] == nil))
        }
        self.init(name: name, description: object["description"]?.stringValue, version: object["version"]?.stringValue, methods: methods)
    }

    /// The JSON form, as discovery returns it.
    public var json: JSONObject {
        var object: JSONObject = ["name": .string(name)]
        if let description { object["description"] = .string(description) }
        if let version { object["version"] = .string(version) }
        object["methods"] = .array(methods.map { .object($0.json) })
        return object
    }
}

extension MethodDescription {
    public var json: JSONObject {
        var object: JSONObject = ["name": .string(name), "scope": .string(scope.rawValue)]
        if let description { object["description"] = .string(description) }
        if let minimumPeriod { object["minPeriod"] = .number(JSONNumber(minimumPeriod)) }
        if let minimumEvents { object["minEvents"] = .number(JSONNumber(minimumEvents)) }
        if acceptsAnyParameters { return object }
        object["parameters"] = .array(
            parameters.map { parameter in
                var value: JSONObject = [
                    "name": .string(parameter.name), "type": .string(parameter.type.rawValue), "required": .bool(parameter.required),
                ]
                if let text = parameter.description { value["description"] = .string(text) }
                if let pattern = parameter.pattern { value["pattern"] = .string(pattern) }
                if let minimum = parameter.minimum { value["minimum"] = .number(JSONNumber(minimum)) }
                if let maximum = parameter.maximum { value["maximum"] = .number(JSONNumber(maximum)) }
                return .object(value)
            })
        return object
    }
}
