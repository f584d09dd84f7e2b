//! Key layout of the single DynamoDB table (see docs/data-model.md).

pub const PK: &str = "PK";
pub const SK: &str = "SK";
pub const GSI1: &str = "GSI1";
pub const GSI1_PK: &str = "GSI1PK";
pub const GSI1_SK: &str = "GSI1SK";

/// Partition of everything a tenant owns at tenant level (profile, keys, secrets, settings).
pub fn tenant_pk(tenant_id: &str) -> String {
    format!("T#{tenant_id}")
}

pub const TENANT_SK: &str = "TENANT";
pub const GRAPH_TOKEN_SK: &str = "SECRET#GRAPH_TOKEN";

pub fn api_key_sk(key_id: &str) -> String {
    format!("KEY#{key_id}")
}

/// Lookup from a WhatsApp phone number id to its tenant (outside any tenant by necessity: it is
/// how the webhook finds the tenant).
pub fn phone_route_pk(phone_number_id: &str) -> String {
    format!("PNID#{phone_number_id}")
}

pub const ROUTE_SK: &str = "ROUTE";

/// GSI1 partition listing all tenants (used by the scheduled retention sweep).
pub const ALL_TENANTS_GSI1PK: &str = "TENANTS";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_items_are_under_the_tenant_partition() {
        assert_eq!(tenant_pk("abc"), "T#abc");
        assert_eq!(api_key_sk("k1"), "KEY#k1");
        assert_ne!(phone_route_pk("123"), tenant_pk("123"));
    }
}
