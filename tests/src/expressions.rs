//! What DynamoDB checks of a request's expressions and the local endpoint does not: every
//! name (`#n`) and value (`:v`) a request defines must be used by one of its expressions, and
//! every one used must be defined ("Value provided in ExpressionAttributeValues unused in
//! expressions", a `ValidationException` on AWS). The IAM gates ([`crate::proxy`]) run this on
//! every DynamoDB request of the suite, so such a request fails here as it would on AWS.

use serde_json::{Map, Value};

const EXPRESSIONS: &[&str] = &[
    "KeyConditionExpression",
    "FilterExpression",
    "ProjectionExpression",
    "UpdateExpression",
    "ConditionExpression",
];

/// The first expression problem of a DynamoDB JSON request (`target`: the operation after
/// `DynamoDB_20120810.`), if any.
pub fn problem(target: &str, body: &[u8]) -> Option<String> {
    let request: Value = serde_json::from_slice(body).ok()?;
    let parts: Vec<&Map<String, Value>> = match target {
        "TransactWriteItems" => request
            .get("TransactItems")?
            .as_array()?
            .iter()
            .filter_map(|item| item.as_object()?.values().next()?.as_object())
            .collect(),
        "TransactGetItems" => request
            .get("TransactItems")?
            .as_array()?
            .iter()
            .filter_map(|item| item.get("Get")?.as_object())
            .collect(),
        "BatchGetItem" => request
            .get("RequestItems")?
            .as_object()?
            .values()
            .filter_map(Value::as_object)
            .collect(),
        _ => vec![request.as_object()?],
    };
    parts.into_iter().find_map(part_problem)
}

/// One request's (or transaction item's) names and values against its expressions.
fn part_problem(part: &Map<String, Value>) -> Option<String> {
    let expressions: Vec<&str> = EXPRESSIONS
        .iter()
        .filter_map(|e| part.get(*e).and_then(Value::as_str))
        .collect();
    for (field, sigil) in [("ExpressionAttributeNames", '#'), ("ExpressionAttributeValues", ':')] {
        let defined: Vec<&String> = part
            .get(field)
            .and_then(Value::as_object)
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        let used: Vec<&str> = expressions.iter().flat_map(|e| tokens(e, sigil)).collect();
        if let Some(unused) = defined.iter().find(|d| !used.contains(&d.as_str())) {
            return Some(format!(
                "{field} defines {unused}, which no expression uses: {expressions:?}"
            ));
        }
        if let Some(undefined) = used.iter().find(|u| !defined.iter().any(|d| d == *u)) {
            return Some(format!(
                "an expression uses {undefined}, which {field} does not define: {expressions:?}"
            ));
        }
    }
    None
}

/// The `#name` or `:value` tokens of an expression.
fn tokens(expression: &str, sigil: char) -> impl Iterator<Item = &str> {
    expression.match_indices(sigil).map(move |(at, _)| {
        let rest = &expression[at + 1..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        &expression[at..at + 1 + len]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unused_and_undefined_names_and_values_are_what_dynamodb_refuses() {
        let fine = json!({"KeyConditionExpression": "#pk = :pk", "FilterExpression": "#st = :s",
                          "ExpressionAttributeNames": {"#pk": "PK", "#st": "status"},
                          "ExpressionAttributeValues": {":pk": {"S": "a"}, ":s": {"S": "open"}}});
        assert_eq!(problem("Query", fine.to_string().as_bytes()), None);
        let unused = json!({"KeyConditionExpression": "PK = :pk",
                            "ExpressionAttributeValues": {":pk": {"S": "a"}, ":now": {"S": "t"}}});
        assert!(
            problem("Query", unused.to_string().as_bytes())
                .unwrap()
                .contains(":now")
        );
        let undefined = json!({"UpdateExpression": "SET #a = :a", "ExpressionAttributeNames": {"#a": "a"}});
        assert!(
            problem("UpdateItem", undefined.to_string().as_bytes())
                .unwrap()
                .contains(":a")
        );
        // `:pk` is not `:pk2`: tokens are whole.
        let prefix = json!({"KeyConditionExpression": "PK = :pk2",
                            "ExpressionAttributeValues": {":pk": {"S": "a"}, ":pk2": {"S": "b"}}});
        assert!(problem("Query", prefix.to_string().as_bytes()).unwrap().contains(":pk"));
        let transaction = json!({"TransactItems": [
            {"Put": {"Item": {}, "ConditionExpression": "attribute_not_exists(PK)"}},
            {"Update": {"UpdateExpression": "SET a = :a", "ExpressionAttributeValues": {":a": {"N": "1"}, ":b": {"N": "2"}}}}]});
        assert!(
            problem("TransactWriteItems", transaction.to_string().as_bytes())
                .unwrap()
                .contains(":b")
        );
        let batch = json!({"RequestItems": {"t": {"Keys": [], "ProjectionExpression": "#p0",
                                                   "ExpressionAttributeNames": {"#p0": "a", "#p1": "b"}}}});
        assert!(
            problem("BatchGetItem", batch.to_string().as_bytes())
                .unwrap()
                .contains("#p1")
        );
    }
}
