//! The walk over every node of a statement's tree, feeding the [`Collector`].

use super::*;

// The walk. pg_query's own `nodes()` visits only the node types its authors needed (it
// misses VALUES lists, RETURNING, LIMIT, array and subscript expressions, DEFAULT
// expressions...), and a guard that misses a function call in `ARRAY[...]` is no guard. So
// every node type and every field that can hold a node is walked: the field lists below
// were generated from pg_query's protobuf definitions (any field whose type is `Node` or a
// message), and the enum list must name every `NodeEnum` variant, so a pg_query upgrade
// that adds one fails to compile here instead of going unseen. The few types whose walk
// needs more than visiting fields in order are written out by hand after them.

pub(super) trait Walk {
    fn walk<'t>(&'t self, c: &mut Collector<'t>);
}

impl<T: Walk> Walk for Option<T> {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        if let Some(x) = self {
            x.walk(c);
        }
    }
}

impl<T: Walk> Walk for Box<T> {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        (**self).walk(c);
    }
}

impl<T: Walk> Walk for Vec<T> {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        for x in self {
            x.walk(c);
        }
    }
}

impl Walk for Node {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        self.node.walk(c);
    }
}

macro_rules! walk_node_enum {
    ($($variant:ident),* $(,)?) => {
        impl Walk for NodeEnum {
            fn walk<'t>(&'t self, c: &mut Collector<'t>) {
                c.note(self);
                match self {
                    $(NodeEnum::$variant(x) => x.walk(c),)*
                }
            }
        }
    };
}

macro_rules! walk_fields {
    ($($ty:ident { $($field:ident),* $(,)? }),* $(,)?) => {
        $(
            impl Walk for protobuf::$ty {
                #[allow(unused_variables)]
                fn walk<'t>(&'t self, c: &mut Collector<'t>) {
                    $(self.$field.walk(c);)*
                }
            }
        )*
    };
}

walk_node_enum! {
    Alias, RangeVar, TableFunc, IntoClause, Var, Param, Aggref, GroupingFunc, WindowFunc,
    WindowFuncRunCondition, MergeSupportFunc, SubscriptingRef, FuncExpr, NamedArgExpr, OpExpr,
    DistinctExpr, NullIfExpr, ScalarArrayOpExpr, BoolExpr, SubLink, SubPlan, AlternativeSubPlan,
    FieldSelect, FieldStore, RelabelType, CoerceViaIo, ArrayCoerceExpr, ConvertRowtypeExpr,
    CollateExpr, CaseExpr, CaseWhen, CaseTestExpr, ArrayExpr, RowExpr, RowCompareExpr,
    CoalesceExpr, MinMaxExpr, SqlvalueFunction, XmlExpr, JsonFormat, JsonReturning,
    JsonValueExpr, JsonConstructorExpr, JsonIsPredicate, JsonBehavior, JsonExpr, JsonTablePath,
    JsonTablePathScan, JsonTableSiblingJoin, NullTest, BooleanTest, MergeAction, CoerceToDomain,
    CoerceToDomainValue, SetToDefault, CurrentOfExpr, NextValueExpr, InferenceElem,
    ReturningExpr, TargetEntry, RangeTblRef, JoinExpr, FromExpr, OnConflictExpr, Query,
    TypeName, ColumnRef, ParamRef, AExpr, TypeCast, CollateClause, RoleSpec, FuncCall, AStar,
    AIndices, AIndirection, AArrayExpr, ResTarget, MultiAssignRef, SortBy, WindowDef,
    RangeSubselect, RangeFunction, RangeTableFunc, RangeTableFuncCol, RangeTableSample,
    ColumnDef, TableLikeClause, IndexElem, DefElem, LockingClause, XmlSerialize, PartitionElem,
    PartitionSpec, PartitionBoundSpec, PartitionRangeDatum, PartitionCmd, RangeTblEntry,
    RtepermissionInfo, RangeTblFunction, TableSampleClause, WithCheckOption, SortGroupClause,
    GroupingSet, WindowClause, RowMarkClause, WithClause, InferClause, OnConflictClause,
    CtesearchClause, CtecycleClause, CommonTableExpr, MergeWhenClause, ReturningOption,
    ReturningClause, TriggerTransition, JsonOutput, JsonArgument, JsonFuncExpr,
    JsonTablePathSpec, JsonTable, JsonTableColumn, JsonKeyValue, JsonParseExpr, JsonScalarExpr,
    JsonSerializeExpr, JsonObjectConstructor, JsonArrayConstructor, JsonArrayQueryConstructor,
    JsonAggConstructor, JsonObjectAgg, JsonArrayAgg, RawStmt, InsertStmt, DeleteStmt,
    UpdateStmt, MergeStmt, SelectStmt, SetOperationStmt, ReturnStmt, PlassignStmt,
    CreateSchemaStmt, AlterTableStmt, AlterTableCmd, AtalterConstraint, ReplicaIdentityStmt,
    AlterCollationStmt, AlterDomainStmt, GrantStmt, ObjectWithArgs, AccessPriv, GrantRoleStmt,
    AlterDefaultPrivilegesStmt, CopyStmt, VariableSetStmt, VariableShowStmt, CreateStmt,
    Constraint, CreateTableSpaceStmt, DropTableSpaceStmt, AlterTableSpaceOptionsStmt,
    AlterTableMoveAllStmt, CreateExtensionStmt, AlterExtensionStmt, AlterExtensionContentsStmt,
    CreateFdwStmt, AlterFdwStmt, CreateForeignServerStmt, AlterForeignServerStmt,
    CreateForeignTableStmt, CreateUserMappingStmt, AlterUserMappingStmt, DropUserMappingStmt,
    ImportForeignSchemaStmt, CreatePolicyStmt, AlterPolicyStmt, CreateAmStmt, CreateTrigStmt,
    CreateEventTrigStmt, AlterEventTrigStmt, CreatePlangStmt, CreateRoleStmt, AlterRoleStmt,
    AlterRoleSetStmt, DropRoleStmt, CreateSeqStmt, AlterSeqStmt, DefineStmt, CreateDomainStmt,
    CreateOpClassStmt, CreateOpClassItem, CreateOpFamilyStmt, AlterOpFamilyStmt, DropStmt,
    TruncateStmt, CommentStmt, SecLabelStmt, DeclareCursorStmt, ClosePortalStmt, FetchStmt,
    IndexStmt, CreateStatsStmt, StatsElem, AlterStatsStmt, CreateFunctionStmt,
    FunctionParameter, AlterFunctionStmt, DoStmt, InlineCodeBlock, CallStmt, CallContext,
    RenameStmt, AlterObjectDependsStmt, AlterObjectSchemaStmt, AlterOwnerStmt,
    AlterOperatorStmt, AlterTypeStmt, RuleStmt, NotifyStmt, ListenStmt, UnlistenStmt,
    TransactionStmt, CompositeTypeStmt, CreateEnumStmt, CreateRangeStmt, AlterEnumStmt,
    ViewStmt, LoadStmt, CreatedbStmt, AlterDatabaseStmt, AlterDatabaseRefreshCollStmt,
    AlterDatabaseSetStmt, DropdbStmt, AlterSystemStmt, ClusterStmt, VacuumStmt, VacuumRelation,
    ExplainStmt, CreateTableAsStmt, RefreshMatViewStmt, CheckPointStmt, DiscardStmt, LockStmt,
    ConstraintsSetStmt, ReindexStmt, CreateConversionStmt, CreateCastStmt, CreateTransformStmt,
    PrepareStmt, ExecuteStmt, DeallocateStmt, DropOwnedStmt, ReassignOwnedStmt,
    AlterTsdictionaryStmt, AlterTsconfigurationStmt, PublicationTable, PublicationObjSpec,
    CreatePublicationStmt, AlterPublicationStmt, CreateSubscriptionStmt, AlterSubscriptionStmt,
    DropSubscriptionStmt, Integer, Float, Boolean, String, BitString, List, IntList, OidList,
    AConst,
}

walk_fields! {
    AArrayExpr { elements },
    AConst {},
    AExpr { name, lexpr, rexpr },
    AIndices { lidx, uidx },
    AIndirection { arg, indirection },
    AStar {},
    AccessPriv { cols },
    Aggref { xpr, aggargtypes, aggdirectargs, args, aggorder, aggdistinct, aggfilter },
    Alias { colnames },
    AlterCollationStmt { collname },
    AlterDatabaseRefreshCollStmt {},
    AlterDatabaseSetStmt { setstmt },
    AlterDatabaseStmt { options },
    AlterDefaultPrivilegesStmt { options, action },
    AlterDomainStmt { type_name, def },
    AlterEnumStmt { type_name },
    AlterEventTrigStmt {},
    AlterExtensionContentsStmt { object },
    AlterExtensionStmt { options },
    AlterFdwStmt { func_options, options },
    AlterForeignServerStmt { options },
    AlterFunctionStmt { func, actions },
    AlterObjectDependsStmt { relation, object, extname },
    AlterObjectSchemaStmt { relation, object },
    AlterOpFamilyStmt { opfamilyname, items },
    AlterOperatorStmt { opername, options },
    AlterOwnerStmt { relation, object, newowner },
    AlterPolicyStmt { table, roles, qual, with_check },
    AlterPublicationStmt { options, pubobjects },
    AlterRoleSetStmt { role, setstmt },
    AlterRoleStmt { role, options },
    AlterSeqStmt { sequence, options },
    AlterStatsStmt { defnames, stxstattarget },
    AlterSubscriptionStmt { publication, options },
    AlterSystemStmt { setstmt },
    AlterTableCmd { newowner, def },
    AlterTableMoveAllStmt { roles },
    AlterTableSpaceOptionsStmt { options },
    AlterTableStmt { relation, cmds },
    AlterTsConfigurationStmt { cfgname, tokentype, dicts },
    AlterTsDictionaryStmt { dictname, options },
    AlterTypeStmt { type_name, options },
    AlterUserMappingStmt { user, options },
    AlternativeSubPlan { xpr, subplans },
    ArrayCoerceExpr { xpr, arg, elemexpr },
    ArrayExpr { xpr, elements },
    AtAlterConstraint {},
    BitString {},
    BoolExpr { xpr, args },
    Boolean {},
    BooleanTest { xpr, arg },
    CallContext {},
    CallStmt { funccall, funcexpr, outargs },
    CaseTestExpr { xpr },
    CheckPointStmt {},
    ClosePortalStmt {},
    ClusterStmt { relation, params },
    CoalesceExpr { xpr, args },
    CoerceToDomain { xpr, arg },
    CoerceToDomainValue { xpr },
    CoerceViaIo { xpr, arg },
    CollateClause { arg, collname },
    CollateExpr { xpr, arg },
    ColumnDef {
        type_name, raw_default, cooked_default, identity_sequence, coll_clause, constraints,
        fdwoptions,
    },
    ColumnRef { fields },
    CommentStmt { object },
    CommonTableExpr {
        aliascolnames, ctequery, search_clause, cycle_clause, ctecolnames, ctecoltypes,
        ctecoltypmods, ctecolcollations,
    },
    CompositeTypeStmt { typevar, coldeflist },
    Constraint {
        raw_expr, keys, including, exclusions, options, where_clause, pktable, fk_attrs, pk_attrs,
        fk_del_set_cols, old_conpfeqop,
    },
    ConstraintsSetStmt { constraints },
    ConvertRowtypeExpr { xpr, arg },
    CopyStmt { relation, query, attlist, options, where_clause },
    CreateAmStmt { handler_name },
    CreateCastStmt { sourcetype, targettype, func },
    CreateConversionStmt { conversion_name, func_name },
    CreateDomainStmt { domainname, type_name, coll_clause, constraints },
    CreateEnumStmt { type_name, vals },
    CreateEventTrigStmt { whenclause, funcname },
    CreateExtensionStmt { options },
    CreateFdwStmt { func_options, options },
    CreateForeignServerStmt { options },
    CreateForeignTableStmt { base_stmt, options },
    CreateFunctionStmt { funcname, parameters, return_type, options, sql_body },
    CreateOpClassItem { name, order_family, class_args, storedtype },
    CreateOpClassStmt { opclassname, opfamilyname, datatype, items },
    CreateOpFamilyStmt { opfamilyname },
    CreatePLangStmt { plhandler, plinline, plvalidator },
    CreatePolicyStmt { table, roles, qual, with_check },
    CreatePublicationStmt { options, pubobjects },
    CreateRangeStmt { type_name, params },
    CreateRoleStmt { options },
    CreateSchemaStmt { authrole, schema_elts },
    CreateSeqStmt { sequence, options },
    CreateStatsStmt { defnames, stat_types, exprs, relations },
    CreateStmt {
        relation, table_elts, inh_relations, partbound, partspec, of_typename, constraints,
        nnconstraints, options,
    },
    CreateSubscriptionStmt { publication, options },
    CreateTableAsStmt { query, into },
    CreateTableSpaceStmt { owner, options },
    CreateTransformStmt { type_name, fromsql, tosql },
    CreateTrigStmt { relation, funcname, args, columns, when_clause, transition_rels, constrrel },
    CreateUserMappingStmt { user, options },
    CreatedbStmt { options },
    CteCycleClause { cycle_col_list, cycle_mark_value, cycle_mark_default },
    CteSearchClause { search_col_list },
    CurrentOfExpr { xpr },
    DeallocateStmt {},
    DeclareCursorStmt { query },
    DefElem { arg },
    DefineStmt { defnames, args, definition },
    DiscardStmt {},
    DistinctExpr { xpr, args },
    DoStmt { args },
    DropOwnedStmt { roles },
    DropRoleStmt { roles },
    DropStmt { objects },
    DropSubscriptionStmt {},
    DropTableSpaceStmt {},
    DropUserMappingStmt { user },
    DropdbStmt { options },
    ExecuteStmt { params },
    ExplainStmt { query, options },
    FetchStmt {},
    FieldSelect { xpr, arg },
    FieldStore { xpr, arg, newvals, fieldnums },
    Float {},
    FromExpr { fromlist, quals },
    FuncExpr { xpr, args },
    FunctionParameter { arg_type, defexpr },
    GrantRoleStmt { granted_roles, grantee_roles, opt, grantor },
    GrantStmt { objects, privileges, grantees, grantor },
    GroupingFunc { xpr, args, refs },
    GroupingSet { content },
    ImportForeignSchemaStmt { table_list, options },
    IndexElem { expr, collation, opclass, opclassopts },
    IndexStmt {
        relation, index_params, index_including_params, options, where_clause, exclude_op_names,
    },
    InferClause { index_elems, where_clause },
    InferenceElem { xpr, expr },
    InlineCodeBlock {},
    IntList { items },
    Integer {},
    JsonAggConstructor { output, agg_filter, agg_order, over },
    JsonArgument { val },
    JsonArrayAgg { constructor, arg },
    JsonArrayConstructor { exprs, output },
    JsonArrayQueryConstructor { query, output, format },
    JsonBehavior { expr },
    JsonConstructorExpr { xpr, args, func, coercion, returning },
    JsonExpr {
        xpr, formatted_expr, format, path_spec, returning, passing_names, passing_values, on_empty,
        on_error,
    },
    JsonFormat {},
    JsonFuncExpr { context_item, pathspec, passing, output, on_empty, on_error },
    JsonIsPredicate { expr, format },
    JsonKeyValue { key, value },
    JsonObjectAgg { constructor, arg },
    JsonObjectConstructor { exprs, output },
    JsonOutput { type_name, returning },
    JsonParseExpr { expr, output },
    JsonReturning { format },
    JsonScalarExpr { expr, output },
    JsonSerializeExpr { expr, output },
    JsonTable { context_item, pathspec, passing, columns, on_error, alias },
    JsonTableColumn { type_name, pathspec, format, columns, on_empty, on_error },
    JsonTablePath {},
    JsonTablePathScan { plan, path, child },
    JsonTablePathSpec { string },
    JsonTableSiblingJoin { plan, lplan, rplan },
    JsonValueExpr { raw_expr, formatted_expr, format },
    List { items },
    ListenStmt {},
    LoadStmt {},
    LockStmt { relations },
    LockingClause { locked_rels },
    MergeAction { qual, target_list, update_colnos },
    MergeSupportFunc { xpr },
    MinMaxExpr { xpr, args },
    MultiAssignRef { source },
    NamedArgExpr { xpr, arg },
    NextValueExpr { xpr },
    NotifyStmt {},
    NullIfExpr { xpr, args },
    NullTest { xpr, arg },
    ObjectWithArgs { objname, objargs, objfuncargs },
    OidList { items },
    OnConflictClause { infer, target_list, where_clause },
    OnConflictExpr {
        arbiter_elems, arbiter_where, on_conflict_set, on_conflict_where, excl_rel_tlist,
    },
    OpExpr { xpr, args },
    Param { xpr },
    ParamRef {},
    PartitionBoundSpec { listdatums, lowerdatums, upperdatums },
    PartitionCmd { name, bound },
    PartitionElem { expr, collation, opclass },
    PartitionRangeDatum { value },
    PartitionSpec { part_params },
    PlAssignStmt { indirection, val },
    PrepareStmt { argtypes, query },
    PublicationObjSpec { pubtable },
    PublicationTable { relation, where_clause, columns },
    Query {
        utility_stmt, cte_list, rtable, rteperminfos, jointree, merge_action_list,
        merge_join_condition, target_list, on_conflict, returning_list, group_clause, grouping_sets,
        having_qual, window_clause, distinct_clause, sort_clause, limit_offset, limit_count,
        row_marks, set_operations, constraint_deps, with_check_options,
    },
    RangeFunction { functions, alias, coldeflist },
    RangeSubselect { subquery, alias },
    RangeTableFunc { docexpr, rowexpr, namespaces, columns, alias },
    RangeTableFuncCol { type_name, colexpr, coldefexpr },
    RangeTableSample { relation, method, args, repeatable },
    RangeTblEntry {
        alias, eref, tablesample, subquery, joinaliasvars, joinleftcols, joinrightcols,
        join_using_alias, functions, tablefunc, values_lists, coltypes, coltypmods, colcollations,
        groupexprs, security_quals,
    },
    RangeTblFunction { funcexpr, funccolnames, funccoltypes, funccoltypmods, funccolcollations },
    RangeTblRef {},
    RawStmt { stmt },
    ReassignOwnedStmt { roles, newrole },
    RefreshMatViewStmt { relation },
    ReindexStmt { relation, params },
    RelabelType { xpr, arg },
    RenameStmt { relation, object },
    ReplicaIdentityStmt {},
    ReturnStmt { returnval },
    ReturningClause { options, exprs },
    ReturningExpr { xpr, retexpr },
    ReturningOption {},
    RoleSpec {},
    RowCompareExpr { xpr, opnos, opfamilies, inputcollids, largs, rargs },
    RowExpr { xpr, args, colnames },
    RowMarkClause {},
    RtePermissionInfo {},
    RuleStmt { relation, where_clause, actions },
    ScalarArrayOpExpr { xpr, args },
    SecLabelStmt { object },
    SetOperationStmt { larg, rarg, col_types, col_typmods, col_collations, group_clauses },
    SetToDefault { xpr },
    SortBy { node, use_op },
    SortGroupClause {},
    SqlValueFunction { xpr },
    StatsElem { expr },
    String {},
    SubLink { xpr, testexpr, oper_name, subselect },
    SubPlan { xpr, testexpr, param_ids, set_param, par_param, args },
    SubscriptingRef { xpr, refupperindexpr, reflowerindexpr, refexpr, refassgnexpr },
    TableFunc {
        ns_uris, ns_names, docexpr, rowexpr, colnames, coltypes, coltypmods, colcollations,
        colexprs, coldefexprs, colvalexprs, passingvalexprs, plan,
    },
    TableLikeClause { relation },
    TableSampleClause { args, repeatable },
    TargetEntry { xpr, expr },
    TransactionStmt { options },
    TriggerTransition {},
    TruncateStmt { relations },
    TypeCast { arg, type_name },
    TypeName { names, typmods, array_bounds },
    UnlistenStmt {},
    VacuumRelation { relation, va_cols },
    VacuumStmt { options, rels },
    Var { xpr },
    VariableSetStmt { args },
    VariableShowStmt {},
    ViewStmt { view, aliases, query, options },
    WindowClause { partition_clause, order_clause, start_offset, end_offset },
    WindowDef { partition_clause, order_clause, start_offset, end_offset },
    WindowFunc { xpr, args, aggfilter, run_condition },
    WindowFuncRunCondition { xpr, arg },
    WithCheckOption { qual },
    XmlExpr { xpr, named_args, arg_names, args },
    XmlSerialize { expr, type_name },
}

impl Walk for protobuf::RangeVar {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        c.relation(self);
    }
}

impl Walk for protobuf::JoinExpr {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        self.larg.walk(c);
        self.rarg.walk(c);
        // `USING (a)` names columns as strings; `NATURAL` compares columns it never names.
        for name in &self.using_clause {
            if let Some(NodeEnum::String(s)) = &name.node {
                c.outputs.filtered.push(s.sval.clone());
            }
        }
        c.outputs.filtered_whole_row |= self.is_natural;
        self.join_using_alias.walk(c);
        c.filtering(|c| self.quals.walk(c));
        self.alias.walk(c);
    }
}

/// `CASE x WHEN ...` compares `x`, `CASE WHEN cond` tests `cond`: both choose what the
/// result shows, like a WHERE.
impl Walk for protobuf::CaseExpr {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        self.xpr.walk(c);
        c.filtering(|c| self.arg.walk(c));
        self.args.walk(c);
        self.defresult.walk(c);
    }
}

impl Walk for protobuf::CaseWhen {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        self.xpr.walk(c);
        c.filtering(|c| self.expr.walk(c));
        self.result.walk(c);
    }
}

impl Walk for protobuf::MergeWhenClause {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        c.filtering(|c| self.condition.walk(c));
        self.target_list.walk(c);
        self.values.walk(c);
    }
}

impl Walk for protobuf::IntoClause {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        if let Some(rel) = &self.rel {
            c.table(rel);
        }
        self.col_names.walk(c);
        self.options.walk(c);
        self.view_query.walk(c);
    }
}

/// Brings the CTE names into scope for the rest of the statement; the statement removes
/// them when it ends. A plain CTE sees only the CTEs before it (`WITH t AS (SELECT * FROM
/// t)` reads the table `t`), a `WITH RECURSIVE` one sees all of them, itself included.
impl Walk for protobuf::WithClause {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        let name = |n: &'t Node| match &n.node {
            Some(NodeEnum::CommonTableExpr(cte)) => Some(cte.ctename.as_str()),
            _ => None,
        };
        if self.recursive {
            c.ctes.extend(self.ctes.iter().filter_map(name));
            self.ctes.walk(c);
        } else {
            for cte in &self.ctes {
                cte.walk(c);
                c.ctes.extend(name(cte));
            }
        }
    }
}

impl Walk for protobuf::ResTarget {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        self.indirection.walk(c);
        c.in_output += 1;
        let stars = c.star_refs;
        let first_reference = c.outputs.referenced.len();
        self.val.walk(c);
        // `c.*` as a select-list item is expanded by the server into the columns with their
        // own names; inside an expression (`row_to_json(c.*)`) it is a whole row.
        let bare_star = matches!(
            self.val.as_ref().and_then(|v| v.node.as_ref()),
            Some(NodeEnum::ColumnRef(cr))
                if matches!(cr.fields.last().and_then(|f| f.node.as_ref()), Some(NodeEnum::AStar(_)))
        );
        if bare_star {
            c.star_refs = stars;
            c.outputs.output_star = true;
        } else if c.in_filter == 0 && self.val.is_some() {
            let item = OutputItem {
                name: if self.name.is_empty() {
                    yielded_name(self.val.as_deref())
                } else {
                    Some(self.name.clone())
                },
                columns: c.outputs.referenced[first_reference..].to_vec(),
                whole_row: c.star_refs > stars,
            };
            c.outputs.items.push(item);
        }
        c.in_output -= 1;
    }
}

/// The name PostgreSQL gives an output expression without an alias, where the text alone
/// settles it: a column keeps its name, a function call takes the function's. `None` for
/// the rest (`?column?`, a cast's type name, `case`, ...): the caller treats an unknown name
/// as possibly any name.
pub(super) fn yielded_name(val: Option<&Node>) -> Option<String> {
    match val.and_then(|v| v.node.as_ref())? {
        NodeEnum::ColumnRef(cr) => match cr.fields.last().and_then(|f| f.node.as_ref()) {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        },
        NodeEnum::FuncCall(f) => match f.funcname.last().and_then(|n| n.node.as_ref()) {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        },
        // `x::t` keeps the name of `x` when it has one, else takes the type's.
        NodeEnum::TypeCast(tc) => yielded_name(tc.arg.as_deref()).or_else(|| {
            match tc
                .type_name
                .as_ref()
                .and_then(|t| t.names.last())
                .and_then(|n| n.node.as_ref())
            {
                Some(NodeEnum::String(s)) => Some(s.sval.clone()),
                _ => None,
            }
        }),
        _ => None,
    }
}

impl Walk for protobuf::SelectStmt {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        let scope = c.ctes.len();
        self.with_clause.walk(c);
        self.into_clause.walk(c);
        self.target_list.walk(c);
        // What a FROM item computes (`LATERAL (VALUES (x))`, `unnest(ARRAY[x])`) can
        // become a result column.
        c.in_output += 1;
        self.from_clause.walk(c);
        c.in_output -= 1;
        c.filtering(|c| {
            self.distinct_clause.walk(c);
            self.where_clause.walk(c);
            self.group_clause.walk(c);
            self.having_clause.walk(c);
            self.window_clause.walk(c);
        });
        self.values_lists.walk(c);
        c.filtering(|c| {
            self.sort_clause.walk(c);
            self.limit_offset.walk(c);
            self.limit_count.walk(c);
        });
        c.outputs.positional |= self.group_clause.iter().any(is_position)
            || self.distinct_clause.iter().any(is_position)
            || self.sort_clause.iter().any(|s| match &s.node {
                Some(NodeEnum::SortBy(by)) => by.node.as_deref().is_some_and(is_position),
                _ => false,
            });
        self.locking_clause.walk(c);
        self.larg.walk(c);
        self.rarg.walk(c);
        c.ctes.truncate(scope);
    }
}

impl Walk for protobuf::InsertStmt {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        let scope = c.ctes.len();
        self.with_clause.walk(c);
        if let Some(rel) = &self.relation {
            c.table(rel);
        }
        self.cols.walk(c);
        self.select_stmt.walk(c);
        self.on_conflict_clause.walk(c);
        self.returning_clause.walk(c);
        c.ctes.truncate(scope);
    }
}

impl Walk for protobuf::UpdateStmt {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        let scope = c.ctes.len();
        self.with_clause.walk(c);
        if let Some(rel) = &self.relation {
            c.table(rel);
        }
        self.target_list.walk(c);
        c.filtering(|c| self.where_clause.walk(c));
        self.from_clause.walk(c);
        self.returning_clause.walk(c);
        c.ctes.truncate(scope);
    }
}

impl Walk for protobuf::DeleteStmt {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        let scope = c.ctes.len();
        self.with_clause.walk(c);
        if let Some(rel) = &self.relation {
            c.table(rel);
        }
        self.using_clause.walk(c);
        c.filtering(|c| self.where_clause.walk(c));
        self.returning_clause.walk(c);
        c.ctes.truncate(scope);
    }
}

impl Walk for protobuf::MergeStmt {
    fn walk<'t>(&'t self, c: &mut Collector<'t>) {
        let scope = c.ctes.len();
        self.with_clause.walk(c);
        if let Some(rel) = &self.relation {
            c.table(rel);
        }
        self.source_relation.walk(c);
        c.filtering(|c| self.join_condition.walk(c));
        self.merge_when_clauses.walk(c);
        self.returning_clause.walk(c);
        c.ctes.truncate(scope);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn grammar_level_bodies_are_walked() {
        let s =
            one("CREATE FUNCTION f() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END");
        assert_eq!(s.kinds, ["ddl", "delete"]);
        assert_eq!(s.tables, ["t"]);
        assert!(s.no_where);
        let s = one("CREATE RULE r AS ON INSERT TO t DO INSTEAD UPDATE u SET a = 1");
        assert_eq!(s.kinds, ["ddl", "update"]);
        assert_eq!(s.tables, ["t", "u"]);
    }
}
