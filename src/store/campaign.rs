//! Campaign, slot and invoice-draft queries (issue-invoices).
