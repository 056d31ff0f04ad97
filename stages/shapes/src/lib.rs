//! Shape statistics and the plan: generalised Procrustes alignment ([`align`]), PCA and the
//! pose component ([`pca`]), pose-based data balancing ([`balance`]), the plan rows
//! ([`plan`], [`plan_table`]) and the stored shape model ([`shape_store`]).
//!
//! Every function is a plain function of (inputs, params) → outputs; nothing here knows about
//! the command line or the DAG.

pub mod align;
pub mod balance;
pub mod pca;
pub mod plan;
pub mod plan_table;
pub mod shape_store;
